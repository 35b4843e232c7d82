"""Every part the renderers can produce (reasoning, tool calls, steps, reports, errors, usage),
checked by the real client packages: the `ai` package's chunk schema and message builder, and
@ag-ui/client's schemas and verifier. Frames that no built-in agent sends yet are covered too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from ag_ui_validate.pytest_plugin import assert_valid_agui

from dari.protocol import ag_ui, ai_sdk
from dari.protocol.frames import ConversationKey, answer_frame
from tests.frontends.conftest import run_node

KEY = ConversationKey("p", "a", "t")


def f(kind: str, rid: str = "r1", **fields: Any) -> dict[str, Any]:
    return answer_frame(kind, KEY, rid, **fields)


FRAMES = [
    f("start"),
    f("step", name="think", content="생각 중...", state="started"),
    f("reasoning", content="The user greets me. "),
    f("reasoning", content="Answer briefly."),
    f("step", name="think", content="정리 완료", state="finished"),
    f("tool", tool_call_id="c1", name="search", state="started", arguments=""),
    f("tool", tool_call_id="c1", name="search", state="arguments", arguments='{"q": "da'),
    f("tool", tool_call_id="c1", name="search", state="arguments", arguments='{"q": "dari"}'),
    f("tool", tool_call_id="c1", name="search", state="finished", arguments='{"q": "dari"}',
      result={"hits": 3}),
    f("tool", tool_call_id="c2", name="fetch", state="started"),
    f("tool", tool_call_id="c2", name="fetch", state="failed", error="timeout"),
    f("response", content="안녕하세요! "),
    f("step", name="write", content="쓰는 중...", state="started"),
    {"type": "auto_report", "content": "조사 완료", "task_id": "t-1", "project_id": "p",
     "agent_name": "researcher", "thread_id": "t", "origin_agent": "a", "message_id": 9},
    f("response", content="dari입니다."),
    f("end", finish_reason="length",
      usage={"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
             "reasoning_tokens": 4}),
]


async def test_ai_sdk_chunks_build_the_message_the_frames_describe(node_packages: Path) -> None:
    stream = ai_sdk.AnswerStream("r1")
    chunks = [chunk for frame in FRAMES for chunk in stream.feed(frame)]
    result = await run_node("ai_sdk.mjs", {"mode": "check", "chunks": chunks})
    assert result["chunks"] == chunks  # every one valid by uiMessageChunkSchema
    message = result["message"]
    assert message["id"] == "r1-answer"
    parts = message["parts"]
    # One text part: steps and reports between pieces do not end it.
    assert [p["text"] for p in parts if p["type"] == "text"] == ["안녕하세요! dari입니다."]
    assert [p["text"] for p in parts if p["type"] == "reasoning"] == [
        "The user greets me. Answer briefly."
    ]
    tools = {p["toolCallId"]: p for p in parts if p["type"] == "dynamic-tool"}
    assert tools["c1"]["state"] == "output-available" and tools["c1"]["output"] == {"hits": 3}
    assert tools["c1"]["input"] == {"q": "dari"}
    assert tools["c2"]["state"] == "output-error" and tools["c2"]["errorText"] == "timeout"
    steps = [p for p in parts if p["type"] == "data-dari-step"]
    assert [s["data"]["state"] for s in steps] == ["finished", "started"]  # updated in place
    assert [p["data"]["task_id"] for p in parts if p["type"] == "data-dari-report"] == ["t-1"]
    assert message["metadata"]["usage"] == {
        "inputTokens": 10, "outputTokens": 7, "totalTokens": 17, "reasoningTokens": 4
    }


async def test_ag_ui_events_pass_the_clients_verifier(node_packages: Path) -> None:
    run = ag_ui.RunStream("t", "run-1", "r1")
    events = run.begin() + [event for frame in FRAMES for event in run.feed(frame)]
    sent = [orjson.loads(ag_ui.text(event)) for event in events]
    assert (await run_node("ag_ui.mjs", {"mode": "verify", "events": sent}))["verified"] == len(
        sent
    )
    assert_valid_agui(sent, max_warnings=0)  # the ag-ui-validate conformance rules
    types = [e["type"] for e in sent]
    assert {"REASONING_START", "TOOL_CALL_RESULT", "CUSTOM", "STEP_FINISHED"} <= set(types)
    assert sent[-1]["usage"] == [
        {"inputTokens": 10, "outputTokens": 7, "totalTokens": 17, "reasoningTokens": 4}
    ]
