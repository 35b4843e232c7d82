"""/metrics is scraped, and its counters move as traffic flows."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerFactory
from tests.support.client import WsClient
from tests.support.server import RunningServer
from tests.support.waiting import eventually


async def _scrape(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_move_with_traffic(server_factory: ServerFactory) -> None:
    # The registry is process-wide and other tests' servers may still be closing sockets, so
    # exact deltas use a label only this test produces (its agent); global counters are bounds.
    server = await server_factory(
        projects=[{"id": "pm", "agents": [{"name": "metered", "backend": "echo"}]}]
    )
    before = await _scrape(server)
    client = await WsClient.open(server.ws("/ws/chat/metrics"))
    await client.recv()
    await client.chat("one two three four", agent="metered", project="pm", id="m1")
    await client.answer("m1")
    await client.send("{oops")
    await client.until_type("error")
    during = await _scrape(server)
    await client.close()

    def delta(name: str, **labels: str) -> float:
        return _value(during, name, **labels) - _value(before, name, **labels)

    assert delta("dari_tokens_streamed_total", agent="metered") == 4
    assert delta("dari_answer_duration_seconds_count", agent="metered", finish_reason="stop") == 1
    assert delta("dari_time_to_first_token_seconds_count", agent="metered") == 1
    assert delta("dari_connections_total", dialect="chat") >= 1
    assert _value(during, "dari_connections_open", dialect="chat") >= 1
    assert delta("dari_frames_in_total") >= 2
    assert delta("dari_frames_out_total") >= 5  # ack, start, pieces (maybe merged), end, error
    assert delta("dari_bytes_out_total") > 0
    assert delta("dari_errors_total", code="bad_request") >= 1
    assert "dari_queue_depth" in {name for name, _ in during}


async def test_metrics_can_require_a_bearer_token(server_factory: ServerFactory) -> None:
    server = await server_factory(server={"metrics_token": "s3cret-scrape"})
    async with httpx.AsyncClient(base_url=server.http) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-scrape"}):
            refused = await http.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "unauthorized"
            assert "dari_" not in refused.text
        allowed = await http.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
        assert allowed.status_code == 200 and "dari_frames_out_total" in allowed.text


async def test_a_serving_node_runs_full_collections_by_growth(server_factory: ServerFactory) -> None:
    """With a small ``gc_full_growth`` the schedule's full collection shows in /metrics once
    connections and answers have filled the old generation; answers stay exact."""
    server = await server_factory(
        server={"gc_full_growth": 5_000},
        projects=[{"id": "pg", "agents": [{"name": "echo", "backend": "echo"}]}],
    )
    before = _value(await _scrape(server), "dari_gc_full_collection_seconds_count")
    clients = [await WsClient.open(server.ws(f"/ws/chat/gc-{n}")) for n in range(40)]
    for n, client in enumerate(clients):  # one at a time: all are one user without auth
        await client.recv()
        await client.chat(f"answer {n} " * 20, agent="echo", project="pg", id=f"g{n}")
        text, end = await client.answer(f"g{n}")
        assert (text, end["finish_reason"]) == (f"answer {n} " * 20, "stop")

    async def collected() -> bool:
        samples = await _scrape(server)
        return _value(samples, "dari_gc_full_collection_seconds_count") > before

    await eventually(collected, timeout=15)
    for client in clients:
        await client.close()
