"""The second seed's dialect on ``/api/chat/ws/{thread_id}``, mapped onto the primary one.

In: ``{"message": "...", "agent_name"?, "project_id"?, "images"?}``.
Out: ``{"event_type": "token" | "step" | "done" | "error", "data": {...}}``.
"""

from __future__ import annotations

from typing import Any

import orjson

from dari.protocol.errors import ProtocolError
from dari.protocol.frames import Frame


def chat_frame(raw: Any, *, thread_id: str, project_id: str, agent_name: str) -> dict[str, Any]:
    """The primary-dialect ``chat`` frame for a dialect message (validated by the codec later)."""
    if not isinstance(raw, dict):
        raise ProtocolError("frame must be a JSON object")
    frame: dict[str, Any] = {
        "type": "chat",
        "message": raw.get("message"),
        "project_id": raw.get("project_id", project_id),
        "agent_name": raw.get("agent_name", agent_name),
        "thread_id": thread_id,
        "images": raw.get("images", []),
    }
    if "id" in raw:
        frame["id"] = raw["id"]
    return frame


def render(frame: Frame) -> str | None:
    """Dialect text for a primary-dialect frame, or None when the dialect has no such event."""
    kind = frame.get("type")
    event: dict[str, Any]
    if kind == "response":
        event = {"event_type": "token", "data": {"token": frame["content"]}}
    elif kind == "step":
        event = {
            "event_type": "step",
            "data": {k: frame[k] for k in ("content", "name", "state")},
        }
    elif kind == "end":
        event = {
            "event_type": "done",
            "data": {"request_id": frame["request_id"], "finish_reason": frame["finish_reason"]},
        }
    elif kind == "error":
        event = {
            "event_type": "error",
            "data": {"code": frame["code"], "message": frame["message"]},
        }
        if "retry_after" in frame:  # rate_limited: when to send again
            event["data"]["retry_after"] = frame["retry_after"]
    elif kind == "auto_report":
        event = {
            "event_type": "auto_report",
            "data": {k: frame.get(k) for k in ("content", "task_id", "agent_name", "project_id")},
        }
    else:
        return None
    return orjson.dumps(event).decode()
