"""Baseline for the relay scenario: a FastAPI WebSocket endpoint relaying a model with the
official ``openai`` client, as users hand-roll it.

On ``{"type": "chat", "message": ...}``: ``start``, then ``client.chat.completions.create(...,
stream=True)`` and one ``response`` frame per chunk that has text, then ``end``. Usage is asked
for (``stream_options.include_usage``), as dari asks for it, so the upstream sends the same
stream to both. uvicorn with uvloop + httptools, ``ws="auto"``, permessage-deflate off, frames
encoded with orjson: the same server set-up as ``ws_fastapi.py``.

Run: ``python relay_fastapi.py --port 8803 --upstream http://127.0.0.1:8900/v1``.
"""

from __future__ import annotations

import argparse

import openai
import orjson
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect


def make_app(upstream: str, model: str) -> FastAPI:
    app = FastAPI()
    client = openai.AsyncOpenAI(base_url=upstream, api_key="bench", max_retries=0)

    async def send(ws: WebSocket, frame: dict[str, object]) -> None:
        await ws.send_text(orjson.dumps(frame).decode())

    @app.websocket("/ws/chat/{client_id}")
    async def chat(ws: WebSocket, client_id: str) -> None:
        await ws.accept()
        try:
            while True:
                msg = orjson.loads(await ws.receive_text())
                if msg.get("type") != "chat":
                    continue
                await send(ws, {"type": "start"})
                stream = await client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": msg["message"]}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
                async with stream:
                    async for chunk in stream:
                        if chunk.choices and chunk.choices[0].delta.content:
                            piece = chunk.choices[0].delta.content
                            await send(ws, {"type": "response", "content": piece})
                await send(ws, {"type": "end"})
        except WebSocketDisconnect:
            pass

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8803)
    parser.add_argument("--upstream", required=True, help="the model server's /v1 URL")
    parser.add_argument("--model", default="bench")
    parser.add_argument("--delay-ms", type=float, help="ignored: the upstream sets the pace")
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.upstream, args.model),
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
