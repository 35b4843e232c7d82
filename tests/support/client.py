"""A thin test client over the `websockets` library: send frames, wait for frames by condition."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

Frame = dict[str, Any]
DEFAULT_TIMEOUT = 10.0


class WsClient:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.frames: list[Frame] = []  # every frame received, in order

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> WsClient:
        kwargs.setdefault("compression", None)
        # Frames are read off the socket as they come even while the test looks elsewhere:
        # with the library's bounded queue a client that stopped reading could not close
        # until the server's close timeout (10 s). Tests of slow readers pause a proxy instead.
        kwargs.setdefault("max_queue", None)
        kwargs.setdefault("max_size", 16 * 1024 * 1024)
        return cls(await connect(url, **kwargs))

    async def send(self, frame: Frame | str | bytes) -> None:
        await self.connection.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def recv(self, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        async with asyncio.timeout(timeout):
            raw = await self.connection.recv()
        frame: Frame = json.loads(raw)
        self.frames.append(frame)
        return frame

    async def until(
        self, predicate: Callable[[Frame], bool], timeout: float = DEFAULT_TIMEOUT
    ) -> Frame:
        """Receive until a frame matches; earlier frames stay in ``self.frames``."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if predicate(frame):
                    return frame

    async def until_type(self, kind: str, timeout: float = DEFAULT_TIMEOUT, **fields: Any) -> Frame:
        return await self.until(
            lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items()),
            timeout,
        )

    async def chat(
        self, message: str, *, agent: str = "echo", project: str = "project_001", **extra: Any
    ) -> None:
        await self.send(
            {
                "type": "chat",
                "message": message,
                "agent_name": agent,
                "project_id": project,
                **extra,
            }
        )

    async def answer(self, request_id: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[str, Frame]:
        """Collect one answer's text up to its ``end``; returns (text, end frame)."""
        end = await self.until_type("end", timeout, request_id=request_id)
        text = "".join(
            f.get("content", "")
            for f in self.frames
            if f.get("request_id") == request_id and f.get("type") in ("response", "snapshot")
        )
        return text, end

    async def close(self) -> None:
        await self.connection.close()

    async def closed_with(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        """Wait for the server to close the socket; return the close code."""
        async with asyncio.timeout(timeout):
            await self.connection.wait_closed()
        return self.connection.close_code


def seqs(frames: list[Frame]) -> list[int]:
    return [f["seq"] for f in frames if f.get("type") != "welcome"]
