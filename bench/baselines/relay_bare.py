"""Baseline for the relay scenario: the least a Python relay can do per chunk on this stack.

A bare ``picows`` server (Cython WebSocket framing) that, on ``{"type": "chat", "message":
...}``, sends ``start``, posts the chat to the OpenAI-compatible upstream with ``aiohttp``,
reads the streamed body line by line, parses each ``data:`` line with orjson and sends one
``response`` frame per chunk that has text, then ``end``. No client library, no history, no
log, no persistence, no checks: the floor under any relay of a streamed model, measured in the
same run as dari and the FastAPI + ``openai`` relay.

Run: ``python relay_bare.py --port 8803 --upstream http://127.0.0.1:8900/v1``.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
import orjson
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

TEXT = WSMsgType.TEXT
START, END = orjson.dumps({"type": "start"}), orjson.dumps({"type": "end"})


async def relay(transport: WSTransport, http: aiohttp.ClientSession, url: str, body: bytes) -> None:
    transport.send(TEXT, START)
    async with http.post(url, data=body, headers={"content-type": "application/json"}) as resp:
        async for line in resp.content:
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                break
            choices = orjson.loads(data).get("choices")
            if choices:
                piece = choices[0].get("delta", {}).get("content")
                if piece and not transport.is_disconnected:
                    transport.send(TEXT, orjson.dumps({"type": "response", "content": piece}))
    transport.send(TEXT, END)


class RelayListener(WSListener):  # type: ignore[misc]
    def __init__(self, http: aiohttp.ClientSession, url: str, model: str) -> None:
        self.http, self.url, self.model = http, url, model
        self.tasks: set[asyncio.Task[None]] = set()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type != TEXT:
            return
        msg = orjson.loads(frame.get_payload_as_bytes())
        if msg.get("type") != "chat":
            return
        body = orjson.dumps(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": msg["message"]}],
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        )
        task = asyncio.get_running_loop().create_task(relay(transport, self.http, self.url, body))
        self.tasks.add(task)  # keep a reference until done
        task.add_done_callback(self.tasks.discard)


async def main(host: str, port: int, upstream: str, model: str) -> None:
    connector = aiohttp.TCPConnector(limit=0)  # one upstream connection per answer in flight
    async with aiohttp.ClientSession(connector=connector) as http:
        url = upstream.rstrip("/") + "/chat/completions"

        def factory(request: WSUpgradeRequest) -> RelayListener:
            return RelayListener(http, url, model)

        server = await ws_create_server(factory, host, port, backlog=4096)
        async with server:
            await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8803)
    parser.add_argument("--upstream", required=True, help="the model server's /v1 URL")
    parser.add_argument("--model", default="bench")
    parser.add_argument("--delay-ms", type=float, help="ignored: the upstream sets the pace")
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port, args.upstream, args.model))
