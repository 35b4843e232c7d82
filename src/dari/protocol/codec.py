"""Turning wire text into validated frames and frames into wire text."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from dari.protocol.errors import ErrorCode, ProtocolError
from dari.protocol.frames import INBOUND_MODELS, ClientFrame, Frame

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024


def encode(frame: Frame) -> str:
    return orjson.dumps(frame).decode()


def decode_client_frame(data: str | bytes | None, *, max_bytes: int) -> ClientFrame:
    """Parse and validate one client frame; raise :class:`ProtocolError` with a precise code."""
    if data is None:
        raise ProtocolError("empty frame")
    if isinstance(data, bytes):
        raise ProtocolError("binary frames are not accepted; send JSON text frames")
    # len(str) <= bytes <= 4*len(str): check cheaply before encoding.
    if len(data) > max_bytes or (len(data) * 4 > max_bytes and _utf8_size(data) > max_bytes):
        raise ProtocolError(f"frame exceeds {max_bytes} bytes", code=ErrorCode.TOO_LARGE)
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProtocolError("frame is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ProtocolError("frame must be a JSON object")
    kind = raw.get("type")
    model = INBOUND_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        # The unknown value is not echoed: it is the client's input, unbounded and unescaped.
        raise ProtocolError(
            "unknown frame type" if isinstance(kind, str) else "frame has no string 'type'",
            request_id=_frame_id(raw),
        )
    try:
        return model.model_validate(raw)  # type: ignore[return-value]
    except ValidationError as exc:
        raise ProtocolError(_describe(exc), request_id=_frame_id(raw)) from None


def _utf8_size(data: str) -> int:
    try:
        return len(data.encode())
    except UnicodeEncodeError:  # lone surrogates: not text a WebSocket could carry
        raise ProtocolError("frame is not valid UTF-8 text") from None


def _frame_id(raw: dict[str, Any]) -> str | None:
    value = raw.get("id")
    return value if isinstance(value, str) and 0 < len(value) <= 128 else None


def _describe(exc: ValidationError) -> str:
    """A short, human description of what is wrong, without echoing the input back."""
    problems = []
    for err in exc.errors(include_url=False, include_input=False)[:3]:
        where = ".".join(str(part) for part in err["loc"]) or "frame"
        problems.append(f"{where}: {err['msg']}")
    return "; ".join(problems)
