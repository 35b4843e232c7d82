"""A one-connection smoke test run before each measurement: the target must stream correctly.

It also warms the server up (imports, first-request paths) before memory is sampled.
"""

from __future__ import annotations

import json
import time
from typing import Any

from websockets.sync.client import connect

from harness.targets import Target

PROBE_TEXT = "probe one two three four"


def check(url: str, target: Target, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Chat once and return the frames; raise if the answer is not the echoed text."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    with connect(url, compression=None, open_timeout=timeout, close_timeout=2) as ws:
        if target.is_dari:
            welcome = json.loads(ws.recv(timeout=timeout))
            frames.append(welcome)
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"{target.name}: first frame is not welcome: {welcome}")
        chat: dict[str, Any] = {"type": "chat", "message": PROBE_TEXT}
        if target.is_dari:
            chat.update(  # ids are per user: one per probed client, or a shared store dedups
                id=url.rsplit("/", 1)[-1] + "-1",
                agent_name=target.agent_name,
                project_id=target.project_id,
            )
        ws.send(json.dumps(chat))
        text = []
        while True:
            frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            frames.append(frame)
            kind = frame.get("type")
            if kind == "response":
                text.append(frame["content"])
            elif kind == "end":
                break
            elif kind == "error":
                raise RuntimeError(f"{target.name}: error frame: {frame}")
    if "".join(text) != PROBE_TEXT:
        raise RuntimeError(f"{target.name}: echoed {''.join(text)!r}, expected {PROBE_TEXT!r}")
    return frames
