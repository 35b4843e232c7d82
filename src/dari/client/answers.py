"""Assembling answers from frames: start, response and reasoning pieces, snapshot (text so far),
end (how it ended, what it cost)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Answer:
    request_id: str
    text: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    error: dict[str, Any] | None = None
    reasoning: str = ""  # the model's reasoning, never part of text
    usage: dict[str, int] | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


class AnswerBook:
    """Keeps every answer seen, by request_id, as frames arrive (each frame once, in order)."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}

    def get(self, request_id: str) -> Answer:
        answer = self.answers.get(request_id)
        if answer is None:
            answer = self.answers[request_id] = Answer(request_id)
        return answer

    def apply(self, frame: dict[str, Any]) -> Answer | None:
        request_id = frame.get("request_id")
        kind = frame.get("type")
        if not isinstance(request_id, str) or kind not in (
            "start",
            "response",
            "reasoning",
            "snapshot",
            "step",
            "end",
            "error",
        ):
            return None
        answer = self.get(request_id)
        if kind == "response":
            answer.text += frame.get("content", "")
        elif kind == "reasoning":
            answer.reasoning += frame.get("content", "")
        elif kind == "snapshot":
            # The text so far replaces whatever this client had: pieces follow it live.
            answer.text = frame.get("content", "")
            answer.steps = list(frame.get("steps", []))
            answer.reasoning = frame.get("reasoning", "")
        elif kind == "step":
            answer.steps.append({k: frame.get(k) for k in ("name", "content", "state")})
        elif kind == "end":
            answer.finish_reason = frame.get("finish_reason")
            answer.usage = frame.get("usage")
        elif kind == "error":
            answer.error = frame
        return answer
