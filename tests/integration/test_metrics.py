"""/metrics is scraped, and its counters move as traffic flows."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import WsClient
from tests.support.server import RunningServer


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


async def test_counters_move_with_traffic(server: RunningServer) -> None:
    before = await _scrape(server)
    client = await WsClient.open(server.ws("/ws/chat/metrics"))
    await client.recv()
    await client.chat("one two three four", id="m1")
    await client.answer("m1")
    await client.send("{oops")
    await client.until_type("error")
    after = await _scrape(server)

    assert _value(after, "dari_connections_total", dialect="chat") == (
        _value(before, "dari_connections_total", dialect="chat") + 1
    )
    assert _value(after, "dari_connections_open", dialect="chat") == (
        _value(before, "dari_connections_open", dialect="chat") + 1
    )
    assert (
        _value(after, "dari_tokens_streamed_total", agent="echo")
        - _value(before, "dari_tokens_streamed_total", agent="echo")
        == 4
    )
    assert _value(after, "dari_frames_in_total") - _value(before, "dari_frames_in_total") == 2
    assert _value(after, "dari_frames_out_total") - _value(before, "dari_frames_out_total") >= 8
    assert (
        _value(after, "dari_errors_total", code="bad_request")
        - _value(before, "dari_errors_total", code="bad_request")
        == 1
    )
    assert (
        _value(after, "dari_answer_duration_seconds_count", agent="echo", finish_reason="stop")
        - _value(before, "dari_answer_duration_seconds_count", agent="echo", finish_reason="stop")
        == 1
    )
    assert (
        _value(after, "dari_time_to_first_token_seconds_count", agent="echo")
        - _value(before, "dari_time_to_first_token_seconds_count", agent="echo")
        == 1
    )
    await client.close()
    assert "dari_queue_depth" in {name for name, _ in after}
