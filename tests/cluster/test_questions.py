"""Agents' questions (interrupts) across three ``dari serve`` processes on one Redis and one
PostgreSQL: answered through another node than the one running the paused answer, and closed
with it when that node is killed."""

from __future__ import annotations

from tests.cluster.clients import TIMEOUT_S, chat, connect, history, subscribe, text_of, unique
from tests.cluster.nodes import LEASE_S, Node


async def test_a_question_asked_on_one_node_is_answered_through_another(
    nodes: list[Node],
) -> None:
    a, b, c = nodes
    thread = unique("t")
    asker = await connect(a, unique("asker"))
    await chat(asker, "pick one", thread, "q1", agent="asker")  # runs on a, where it arrived
    asked = await asker.until_type("interrupt", TIMEOUT_S, request_id="q1")
    watcher = await connect(b, unique("watcher"))
    await subscribe(watcher, thread, agent="asker")
    snapshot = await watcher.until_type("snapshot", TIMEOUT_S, request_id="q1")
    assert [q["state"] for q in snapshot["interrupts"]] == ["pending"]

    answerer = await connect(c, unique("answerer"))
    resume = {"type": "resume", "interrupt_id": asked["interrupt_id"], "value": "blue"}
    await answerer.send(resume)
    for client in (asker, watcher, answerer):
        end = await client.until_type("end", TIMEOUT_S, request_id="q1")
        assert end["finish_reason"] == "stop"
    assert text_of(asker, "q1") == text_of(watcher, "q1") == "Let me check. You picked blue."
    await asker.send(resume)
    refused = await asker.until_type("error", TIMEOUT_S, interrupt_id=asked["interrupt_id"])
    assert refused["code"] == "already_answered"
    saved = [m for m in await history(b, thread, "asker") if m["role"] == "assistant"]
    assert saved[0]["interrupts"][0] | {"expires_at": None} == {
        "interrupt_id": asked["interrupt_id"],
        "payload": asked["payload"],
        "expires_at": None,
        "state": "answered",
        "value": "blue",
    }
    for client in (asker, watcher, answerer):
        await client.close()


async def test_killing_the_node_of_a_paused_answer_ends_it_and_closes_its_question(
    nodes: list[Node],
) -> None:
    a, b, _ = nodes
    thread = unique("t")
    watcher = await connect(b, unique("watcher"))
    await subscribe(watcher, thread, agent="asker")
    asker = await connect(a, unique("asker"))
    await chat(asker, "pick one", thread, "q2", agent="asker")
    asked = await watcher.until_type("interrupt", TIMEOUT_S, request_id="q2")
    await a.kill()
    error = await watcher.until_type("error", LEASE_S + 10, request_id="q2")
    end = await watcher.until_type("end", TIMEOUT_S, request_id="q2")
    assert error["code"] == "agent_failed" and end["finish_reason"] == "error"
    await watcher.send({"type": "resume", "interrupt_id": asked["interrupt_id"], "value": "x"})
    refused = await watcher.until_type("error", TIMEOUT_S, interrupt_id=asked["interrupt_id"])
    assert refused["code"] == "not_found" and "cancelled" in refused["message"]
    saved = [m for m in await history(b, thread, "asker") if m["role"] == "assistant"]
    assert (saved[0]["status"], saved[0]["content"]) == ("failed", "Let me check. ")
    await watcher.close()
