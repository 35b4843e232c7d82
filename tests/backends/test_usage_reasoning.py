"""How answers end, what they cost and what the model reasoned, end to end.

A real server relays the ``openai`` backend talking to the local fake chat-completions server;
real WebSocket clients read the frames, ask for ``history``, resume; ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dari.agents.base import AgentContext, AgentRequest, Finish, Reasoning, Usage
from tests.backends.fake_openai import FakeOpenAI, Reply, ToolCall, think
from tests.backends.graphs import METERED_ANSWER, METERED_REASONING
from tests.conftest import ServerFactory
from tests.support.client import Frame, WsClient
from tests.support.server import RunningServer

PROJECT = "pu"  # only these tests use it, so metric deltas are exact
USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 30,
    "total_tokens": 42,
    "completion_tokens_details": {"reasoning_tokens": 21},
}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


def _project(upstream: FakeOpenAI) -> dict[str, Any]:
    options = {"base_url": upstream.base_url, "model": "fake-model", "timeout_s": 5}
    return {
        "id": PROJECT,
        "agents": [
            {"name": "gpt", "backend": "openai", "options": options},
            {"name": "boss", "backend": "openai", "options": {**options, "delegates": ["w"]}},
            {"name": "w", "backend": "echo"},
            {
                "name": "py",
                "backend": "python",
                "options": {"entrypoint": "tests.backends.test_usage_reasoning:python_thinker"},
            },
            {
                "name": "lg",
                "backend": "langgraph",
                "options": {"entrypoint": "tests.backends.graphs:metered"},
            },
        ],
    }


async def python_thinker(
    request: AgentRequest, ctx: AgentContext
) -> AsyncIterator[str | Reasoning | Usage | Finish]:
    """A python-backend agent that reasons, reports usage for two model calls, and is cut off."""
    yield Reasoning("Why not. ")
    yield "Sure"
    yield Usage(prompt_tokens=4, completion_tokens=2, total_tokens=6)
    yield Reasoning("Keep going.")
    yield ", here"
    yield Usage(prompt_tokens=5, completion_tokens=3, total_tokens=8, reasoning_tokens=2)
    yield Finish("length")


@pytest.fixture
async def server(server_factory: ServerFactory, upstream: FakeOpenAI) -> RunningServer:
    return await server_factory(projects=[_project(upstream)])


async def connect(server: RunningServer, client_id: str, query: str = "") -> WsClient:
    client = await WsClient.open(server.ws(f"/ws/chat/{client_id}{query}"))
    assert (await client.recv())["type"] == "welcome"
    return client


async def history(client: WsClient, agent: str = "gpt") -> list[dict[str, Any]]:
    await client.send({"type": "history", "project_id": PROJECT, "agent_name": agent})
    messages: list[dict[str, Any]] = (await client.until_type("history"))["messages"]
    return messages


def of(frames: list[Frame], request_id: str, *kinds: str) -> list[Frame]:
    return [f for f in frames if f.get("request_id") == request_id and f.get("type") in kinds]


def joined(frames: list[Frame], request_id: str, kind: str) -> str:
    return "".join(f["content"] for f in of(frames, request_id, kind))


async def scrape(server: RunningServer) -> dict[tuple[str, str, str], float]:
    """dari_model_tokens_total of this test's project, by (agent, kind)."""
    async with httpx.AsyncClient(base_url=server.http) as http:
        text = (await http.get("/metrics")).text
    return {
        ("dari_model_tokens_total", s.labels["agent"], s.labels["kind"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "dari_model_tokens_total" and s.labels.get("project") == PROJECT
    }


# --- how it ended, what it cost ------------------------------------------------------------


@pytest.mark.parametrize("reason", ["length", "content_filter"])
async def test_a_cut_short_answer_says_why_in_end_and_history(
    server: RunningServer, upstream: FakeOpenAI, reason: str
) -> None:
    upstream.script(Reply(pieces=["Once ", "upon ", "a"], finish_reason=reason))
    client = await connect(server, f"cut-{reason}")
    await client.chat("tell a story", agent="gpt", project=PROJECT, id="c1")
    text, end = await client.answer("c1")

    assert (text, end["finish_reason"]) == ("Once upon a", reason)
    answer = (await history(client))[-1]
    assert (answer["content"], answer["status"]) == ("Once upon a", "complete")
    assert answer["finish_reason"] == reason
    await client.close()


async def test_usage_is_asked_for_sent_in_end_saved_and_counted(
    server: RunningServer, upstream: FakeOpenAI
) -> None:
    before = await scrape(server)
    upstream.script(Reply(pieces=["fine"], usage=USAGE))
    client = await connect(server, "usage")
    await client.chat("how are you", agent="gpt", project=PROJECT, id="u1")
    _, end = await client.answer("u1")

    assert upstream.requests[0]["stream_options"] == {"include_usage": True}
    wire = {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}
    assert end["finish_reason"] == "stop" and end["usage"] == {**wire, "reasoning_tokens": 21}
    answer = (await history(client))[-1]
    assert answer["usage"] == end["usage"] and answer["finish_reason"] == "stop"
    after = await scrape(server)
    delta = {key: value - before.get(key, 0.0) for key, value in after.items()}
    assert delta == {
        ("dari_model_tokens_total", "gpt", "prompt"): 12,
        ("dari_model_tokens_total", "gpt", "completion"): 30,
        ("dari_model_tokens_total", "gpt", "reasoning"): 21,
    }
    await client.close()


async def test_usage_of_every_tool_round_is_summed(
    server: RunningServer, upstream: FakeOpenAI
) -> None:
    call = ToolCall("delegate_task", {"agent_name": "w", "task": "look it up"})
    first = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    second = {"prompt_tokens": 40, "completion_tokens": 7, "total_tokens": 47}
    upstream.script(
        Reply(tool_calls=[call], usage=first), Reply(pieces=["It is on its way."], usage=second)
    )
    before = await scrape(server)
    client = await connect(server, "rounds")
    await client.chat("look it up", agent="boss", project=PROJECT, id="t1")
    text, end = await client.answer("t1")

    assert text == "It is on its way." and len(upstream.requests) == 2
    assert end["usage"] == {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62}
    after = await scrape(server)
    assert (
        after[("dari_model_tokens_total", "boss", "prompt")]
        - before.get(("dari_model_tokens_total", "boss", "prompt"), 0.0)
        == 50
    )
    assert ("dari_model_tokens_total", "boss", "reasoning") not in after  # none reported
    await client.close()


async def test_an_answer_without_usage_has_none_in_end_or_history(
    server: RunningServer, upstream: FakeOpenAI
) -> None:
    upstream.script(Reply(pieces=["plain"]))
    client = await connect(server, "no-usage")
    await client.chat("hi", agent="gpt", project=PROJECT, id="n1")
    _, end = await client.answer("n1")
    assert "usage" not in end
    answer = (await history(client))[-1]
    assert "usage" not in answer and "reasoning" not in answer
    await client.close()


async def test_any_backend_can_report_reasoning_usage_and_finish(server: RunningServer) -> None:
    client = await connect(server, "python-agent")
    await client.chat("go", agent="py", project=PROJECT, id="p1")
    text, end = await client.answer("p1")

    assert text == "Sure, here" and joined(client.frames, "p1", "reasoning") == (
        "Why not. Keep going."
    )
    assert end["finish_reason"] == "length"
    assert end["usage"] == {
        "prompt_tokens": 9,
        "completion_tokens": 5,
        "total_tokens": 14,
        "reasoning_tokens": 2,
    }
    answer = (await history(client, "py"))[-1]
    assert (answer["reasoning"], answer["usage"]) == ("Why not. Keep going.", end["usage"])
    await client.close()


async def test_a_langgraph_answer_streams_its_reasoning_and_ends_with_its_models_usage(
    server: RunningServer,
) -> None:
    client = await connect(server, "langgraph-agent")
    await client.chat("go", agent="lg", project=PROJECT, id="g1")
    text, end = await client.answer("g1")

    assert text == METERED_ANSWER
    assert joined(client.frames, "g1", "reasoning") == "".join(METERED_REASONING)
    assert end["finish_reason"] == "length"
    assert end["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 7,
        "total_tokens": 19,
        "reasoning_tokens": 3,
    }
    answer = (await history(client, "lg"))[-1]
    assert (answer["content"], answer["reasoning"], answer["usage"]) == (
        METERED_ANSWER,
        "".join(METERED_REASONING),
        end["usage"],
    )
    await client.close()


# --- reasoning ------------------------------------------------------------------------------

THOUGHTS = [think("The user "), think("greets me. ", key="reasoning"), think("Be brief.")]


async def test_reasoning_streams_apart_in_upstream_order_and_is_saved_apart(
    server: RunningServer, upstream: FakeOpenAI
) -> None:
    upstream.script(
        Reply(pieces=[THOUGHTS[0], THOUGHTS[1], "Hello", THOUGHTS[2], " there!"], delay_s=0.03)
    )
    client = await connect(server, "thinker")
    await client.chat("hi", agent="gpt", project=PROJECT, id="r1")
    text, _ = await client.answer("r1")

    streamed = [(f["type"], f["content"]) for f in of(client.frames, "r1", "response", "reasoning")]
    assert streamed == [
        ("reasoning", "The user "),
        ("reasoning", "greets me. "),
        ("response", "Hello"),
        ("reasoning", "Be brief."),
        ("response", " there!"),
    ]
    [frame] = [f for f in of(client.frames, "r1", "reasoning")][:1]
    assert {k: frame[k] for k in ("project_id", "agent_name", "thread_id")} == {
        "project_id": PROJECT,
        "agent_name": "gpt",
        "thread_id": "main",
    }
    assert text == "Hello there!"  # never mixed into the answer
    answer = (await history(client))[-1]
    assert (answer["content"], answer["reasoning"]) == (
        "Hello there!",
        "The user greets me. Be brief.",
    )
    # The next request sends the answer back to the model without its reasoning.
    await client.chat("again", agent="gpt", project=PROJECT, id="r2")
    await client.answer("r2")
    assert {"role": "assistant", "content": "Hello there!"} in upstream.requests[1]["messages"]
    await client.close()


def _long_reply(words: int = 30) -> tuple[Reply, str, str]:
    pieces: list[str | dict[str, Any]] = []
    for i in range(words):
        pieces += [think(f"t{i} "), f"w{i} "]
    reasoning = "".join(f"t{i} " for i in range(words))
    text = "".join(f"w{i} " for i in range(words))
    return Reply(pieces=pieces, delay_s=0.02), reasoning, text


async def test_resume_mid_answer_replays_the_reasoning_missed(
    server: RunningServer, upstream: FakeOpenAI
) -> None:
    reply, reasoning, text = _long_reply()
    upstream.script(reply)
    client = await connect(server, "resumer")
    await client.chat("go", agent="gpt", project=PROJECT, id="m1")
    for _ in range(3):
        await client.until_type("reasoning")
    seq = max(f["seq"] for f in client.frames)
    epoch = client.frames[0]["epoch"]
    client.connection.transport.abort()

    again = await connect(server, "resumer", f"?last_seq={seq}&epoch={epoch}")
    assert again.frames[0]["resumed"] is True
    await again.until_type("end", request_id="m1", timeout=15)
    frames = client.frames + again.frames
    assert joined(frames, "m1", "reasoning") == reasoning
    assert joined(frames, "m1", "response") == text
    await again.close()


async def test_snapshot_when_not_resumed_carries_the_reasoning_so_far(
    server_factory: ServerFactory, upstream: FakeOpenAI
) -> None:
    server = await server_factory(projects=[_project(upstream)], replay={"max_frames": 4})
    reply, reasoning, text = _long_reply()
    upstream.script(reply)
    client = await connect(server, "expired")
    await client.chat("go", agent="gpt", project=PROJECT, id="s1")
    await client.until_type("reasoning")
    seq, epoch = max(f["seq"] for f in client.frames), client.frames[0]["epoch"]
    await client.close()
    # Fill the client's small window with frames that never merge, so seq + 1 is gone.
    async with httpx.AsyncClient(base_url=server.http) as http:
        for n in range(6):
            await http.post("/api/broadcast", json={"content": f"notice {n}"})

    again = await connect(server, "expired", f"?last_seq={seq}&epoch={epoch}")
    assert again.frames[0]["resumed"] is False
    snapshot = await again.until_type("snapshot", request_id="s1")
    assert snapshot["reasoning"] and reasoning.startswith(snapshot["reasoning"])
    assert text.startswith(snapshot["content"])
    await again.until_type("end", request_id="s1", timeout=15)
    after = again.frames[again.frames.index(snapshot) + 1 :]
    assert snapshot["reasoning"] + joined(after, "s1", "reasoning") == reasoning
    assert snapshot["content"] + joined(after, "s1", "response") == text
    await again.close()
