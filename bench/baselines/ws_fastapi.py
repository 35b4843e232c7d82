"""Baseline: a bare FastAPI WebSocket endpoint on uvicorn, as users hand-roll it.

uvicorn with uvloop + httptools, ``ws="auto"`` and permessage-deflate off; frames encoded with
orjson (the strongest simple setup measured in PERF-NOTES). Same streaming as the other
baselines: ``start``, one ``response`` per word paced at ``--delay-ms``, ``end``; and
``{"type": "broadcast", "content": ...}`` sent on to every open socket (the fan-out scenario).
Run: ``python ws_fastapi.py --port 8802``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import time

import orjson
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

PIECE = re.compile(r"\s*\S+\s*")


def make_app(interval: float) -> FastAPI:
    app = FastAPI()

    async def send(ws: WebSocket, frame: dict[str, object]) -> None:
        await ws.send_text(orjson.dumps(frame).decode())  # text frames: decode orjson's bytes

    peers: set[WebSocket] = set()

    @app.websocket("/ws/chat/{client_id}")
    async def chat(ws: WebSocket, client_id: str) -> None:
        await ws.accept()
        peers.add(ws)
        try:
            while True:
                msg = orjson.loads(await ws.receive_text())
                if msg.get("type") == "broadcast":
                    # Fan-out as usually hand-rolled: one await per socket, in turn.
                    text = orjson.dumps({"type": "broadcast", "content": msg["content"]}).decode()
                    for peer in list(peers):
                        with contextlib.suppress(Exception):
                            await peer.send_text(text)
                    continue
                if msg.get("type") != "chat":
                    continue
                await send(ws, {"type": "start"})
                t0 = time.monotonic()
                for n, piece in enumerate(PIECE.findall(msg["message"]) or [msg["message"]]):
                    # Due at t0 + (n+1)*interval (absolute); sleep(0) when late: no loop hogging.
                    await asyncio.sleep(max(0.0, t0 + (n + 1) * interval - time.monotonic()))
                    await send(ws, {"type": "response", "content": piece, "seq": n})
                await send(ws, {"type": "end"})
        except WebSocketDisconnect:
            pass
        finally:
            peers.discard(ws)

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8802)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.delay_ms / 1000),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="auto",
        ws_per_message_deflate=False,
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
