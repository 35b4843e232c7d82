"""Delegation and auto-reports, external reports, broadcast, steps, images, failures, two tabs."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from dari.protocol.frames import ConversationKey
from tests.conftest import ServerFactory
from tests.support.client import WsClient
from tests.support.engines import ENGINES
from tests.support.server import RunningServer


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Everything here holds on one node (memory) and on the several-node engine (Redis)."""
    return str(request.param)


PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()


def _python(name: str, entrypoint: str) -> dict[str, Any]:
    return {"name": name, "backend": "python", "options": {"entrypoint": entrypoint}}


PROJECTS: dict[str, Any] = {
    "projects": [
        {
            "id": "p1",
            "agents": [
                _python("boss", "tests.support.agents:delegator"),
                _python("stepper", "tests.support.agents:stepper"),
                _python("broken", "tests.support.agents:failing"),
                {"name": "worker", "backend": "echo", "options": {"delay_ms": 80}},
                {"name": "echo", "backend": "echo"},
                {"name": "offline", "backend": "offline", "options": {"delay_ms": 0}},
            ],
        },
        {"id": "p2", "agents": [{"name": "echo", "backend": "echo"}]},
    ]
}


async def _connect(server: RunningServer, client_id: str, query: str = "") -> WsClient:
    client = await WsClient.open(server.ws(f"/ws/chat/{client_id}{query}"))
    await client.recv()
    return client


async def _subscribe(client: WsClient, project: str, agent: str | None = None) -> None:
    frame: dict[str, Any] = {"type": "subscribe", "project_id": project}
    if agent:
        frame["agent_name"] = agent
    await client.send(frame)
    await client.until_type("subscribed")


def _reports(client: WsClient) -> list[dict[str, Any]]:
    return [f for f in client.frames if f["type"] == "auto_report"]


async def test_delegation_reports_once_to_every_subscriber_and_into_history(
    server_factory: ServerFactory,
) -> None:

    server = await server_factory(**PROJECTS)
    task_words = " ".join(f"t{i}" for i in range(25))  # the worker echoes it, slowly
    origin = await _connect(server, "origin")
    away = await _connect(server, "away")
    await _subscribe(away, "p1")
    await origin.chat(f"worker {task_words}", agent="boss", project="p1", id="d1")
    text, _ = await origin.answer("d1")
    assert text.startswith("delegated t-")
    task_id = text.removeprefix("delegated ")

    late = await _connect(server, "late")  # connects after the delegation started
    await _subscribe(late, "p1")
    position, epoch = max(f["seq"] for f in away.frames), away.frames[0]["epoch"]
    await away.close()  # away while the task runs (it takes 25 × 80 ms)
    assert not _reports(away), "the task finished before the client went away"

    report = await origin.until_type("auto_report", timeout=20)
    assert report["task_id"] == task_id and report["content"] == task_words
    assert report["agent_name"] == "worker" and report["project_id"] == "p1"
    await late.until_type("auto_report", task_id=task_id, timeout=20)
    back = await _connect(server, "away", f"?last_seq={position}&epoch={epoch}")
    await back.until_type("auto_report", task_id=task_id)
    await back.send({"type": "ping"})
    await back.until_type("pong")  # everything replayed is in by now

    for client in (origin, late, back):
        assert len(_reports(client)) == 1
    history = await server.gateway.store.history(ConversationKey("p1", "boss"), 10)
    assert [(m.role, m.content) for m in history if m.role == "report"] == [("report", task_words)]
    async with httpx.AsyncClient(base_url=server.http) as http:
        reloaded = (await http.get("/api/projects/p1/agents/boss/threads/main/messages")).json()
        (row,) = [m for m in reloaded["messages"] if m["role"] == "report"]
        # A reload shows what the live frame showed: who did the work, for which task.
        assert (row["agent_name"], row["task_id"], row["content"]) == (
            "worker",
            task_id,
            task_words,
        )
        status = (await http.get(f"/api/projects/p1/tasks/{task_id}")).json()
        assert status["status"] == "complete" and status["result"] == task_words
        assert (await http.get("/api/projects/p2/tasks/" + task_id)).status_code == 404
    for client in (origin, late, back):
        await client.close()


async def test_offline_agent_delegate_command(server_factory: ServerFactory) -> None:
    server = await server_factory(**PROJECTS)
    client = await _connect(server, "cmd")
    await client.chat(
        "/delegate worker collect the numbers", agent="offline", project="p1", id="c1"
    )
    text, _ = await client.answer("c1")
    steps = [f for f in client.frames if f["type"] == "step"]
    assert [(s["name"], s["state"]) for s in steps] == [
        ("delegate", "started"),
        ("delegate", "finished"),
    ]
    report = await client.until_type("auto_report", timeout=20)
    assert report["content"] == "collect the numbers" and report["task_id"] in text
    await client.close()


async def test_rest_report_and_broadcast_reach_the_right_clients_only(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**PROJECTS)
    in_p1 = await _connect(server, "in-p1")
    await _subscribe(in_p1, "p1", "echo")  # a conversation in p1 counts as p1
    in_p2 = await _connect(server, "in-p2")
    await _subscribe(in_p2, "p2")
    async with httpx.AsyncClient(base_url=server.http) as http:
        sent = await http.post(
            "/api/projects/p1/reports",
            json={"content": "nightly job done", "agent_name": "echo", "task_id": "job-9"},
        )
        assert sent.status_code == 201
        report = await in_p1.until_type("auto_report")
        assert report["content"] == "nightly job done" and report["task_id"] == "job-9"
        to_p2 = await http.post("/api/broadcast", json={"content": "p2 only", "project_id": "p2"})
        assert to_p2.json()["delivered"] == 1
        assert (await in_p2.until_type("broadcast"))["content"] == "p2 only"
        everyone = await http.post("/api/broadcast", json={"content": "all hands"})
        assert everyone.json()["delivered"] == 2
        missing = await http.post("/api/broadcast", json={"content": "x", "project_id": "nope"})
        assert missing.status_code == 404
    assert (await in_p1.until_type("broadcast"))["content"] == "all hands"
    assert (await in_p2.until_type("broadcast"))["content"] == "all hands"
    assert _reports(in_p2) == []
    assert [f["content"] for f in in_p1.frames if f["type"] == "broadcast"] == ["all hands"]
    history = await server.gateway.store.history(ConversationKey("p1", "echo"), 5)
    assert [(m.role, m.content) for m in history] == [("report", "nightly job done")]
    for client in (in_p1, in_p2):
        await client.close()


async def test_steps_stream_and_are_saved_with_the_answer(server_factory: ServerFactory) -> None:
    server = await server_factory(**PROJECTS)
    client = await _connect(server, "steps")
    await client.chat("차트 보고서", agent="stepper", project="p1", id="s1")
    text, _ = await client.answer("s1")
    steps = [(f["name"], f["content"], f["state"]) for f in client.frames if f["type"] == "step"]
    assert steps == [
        ("analyse", "데이터 분석 중...", "started"),
        ("analyse", "데이터 분석 완료", "finished"),
        ("chart", "차트 생성 중...", "started"),
        ("chart", "차트 생성 완료", "finished"),
    ]
    assert text == "차트 보고서"
    await client.send({"type": "history", "project_id": "p1", "agent_name": "stepper"})
    history = await client.until_type("history")
    saved = history["messages"][-1]
    assert [(s["name"], s["state"]) for s in saved["steps"]] == [(n, st) for n, _, st in steps]
    await client.close()


async def test_image_round_trips_through_history(server_factory: ServerFactory) -> None:
    server = await server_factory(**PROJECTS)
    client = await _connect(server, "img")
    await client.chat("what is this?", agent="offline", project="p1", id="i1", images=[PNG])
    text, _ = await client.answer("i1")
    assert "1 image" in text
    async with httpx.AsyncClient(base_url=server.http) as http:
        body = (await http.get("/api/projects/p1/agents/offline/threads/main/messages")).json()
    assert body["messages"][0]["images"] == [PNG]
    # Over the image limit but within the frame limit, so the error can name the request.
    too_big = "data:image/png;base64," + "A" * (server.settings.limits.max_image_bytes * 3 // 2)
    await client.chat("big", agent="offline", project="p1", id="i2", images=[too_big])
    error = await client.until_type("error", request_id="i2")
    assert error["code"] == "too_large"
    await client.close()


async def test_failing_agent_reports_agent_failed_and_next_chat_works(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**PROJECTS)
    client = await _connect(server, "broken")
    await client.chat("anything", agent="broken", project="p1", id="b1")
    text, end = await client.answer("b1")
    error = next(f for f in client.frames if f["type"] == "error")
    assert error["code"] == "agent_failed" and error["request_id"] == "b1"
    assert "Traceback" not in error["message"] and "model crashed" not in error["message"]
    assert end["finish_reason"] == "error" and text == "partial answer"
    saved = await server.gateway.store.history(ConversationKey("p1", "broken"), 2)
    assert (saved[-1].status, saved[-1].content) == ("failed", "partial answer")
    await client.chat("after", agent="echo", project="p1", id="b2")
    assert (await client.answer("b2"))[0] == "after"
    await client.close()


async def test_two_tabs_on_one_conversation_see_the_same_stream(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**PROJECTS)
    tab1 = await _connect(server, "tab-1")
    tab2 = await _connect(server, "tab-2")
    await _subscribe(tab2, "p1", "worker")
    words = " ".join(f"x{i}" for i in range(15))
    await tab1.chat(words, agent="worker", project="p1", id="t1")
    first, _ = await tab1.answer("t1", timeout=20)
    second, _ = await tab2.answer("t1", timeout=20)
    assert first == second == words
    assert next(f["type"] for f in tab2.frames if f.get("request_id") == "t1") == "start"
    await tab1.close()
    await tab2.close()


# One node restarting on its own store; on the Redis engine a stopped node's answers and tasks
# are ended by another node's reaper (tests/cluster: kill -9 and restarts).
@pytest.mark.parametrize("engine", ["memory"])
async def test_a_task_cut_off_by_a_restart_is_reported_failed_once(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**PROJECTS)
    origin = await _connect(server, "origin")
    long_task = " ".join(f"t{i}" for i in range(200))  # 200 × 80 ms: outlives the server
    await origin.chat(f"worker {long_task}", agent="boss", project="p1", id="d1")
    text, _ = await origin.answer("d1")
    task_id = text.removeprefix("delegated ")
    assert (await server.gateway.store.get_task(task_id)).status == "running"  # type: ignore[union-attr]
    await origin.close()
    await server.stop()

    restarted = await server_factory(**PROJECTS)
    store = restarted.gateway.store
    task = await store.get_task(task_id)
    assert task is not None and task.status == "failed"
    assert task.result == "[worker] task failed: the gateway restarted while it ran"
    history = await store.history(ConversationKey("p1", "boss"), 10)
    reports = [(m.request_id, m.content) for m in history if m.role == "report"]
    assert reports == [(task_id, task.result)]
    await restarted.stop()

    # A second restart finds nothing left running and reports nothing again.
    again = await server_factory(**PROJECTS)
    history = await again.gateway.store.history(ConversationKey("p1", "boss"), 10)
    assert [m.request_id for m in history if m.role == "report"] == [task_id]
