"""``dari chat``: a terminal client that streams answers as they arrive.

Type a message and press Enter. Lines starting with ``/`` go to the agent (for example
``/delegate researcher 시장 조사``) except ``/quit``. Connection changes are shown on stderr.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from dari.client.client import ClientClosed, DariClient


def _status(state: str, code: int | None) -> None:
    label = {"connected": "connected", "reconnecting": "reconnecting…", "offline": "offline"}
    suffix = f" (close {code})" if code else ""
    print(f"\r[{label.get(state, state)}{suffix}]", file=sys.stderr, flush=True)


def _show(frame: dict[str, Any], printed: dict[str, int], agent: str) -> None:
    kind = frame.get("type")
    request_id = frame.get("request_id", "")
    if kind == "start":
        print(f"{agent}> ", end="", flush=True)
    elif kind == "snapshot":
        text = frame.get("content", "")
        print(text[printed.get(request_id, 0) :], end="", flush=True)
        printed[request_id] = len(text)
    elif kind == "response":
        print(frame["content"], end="", flush=True)
        printed[request_id] = printed.get(request_id, 0) + len(frame["content"])
    elif kind == "step" and frame.get("state") == "started":
        print(f"\n  · {frame.get('content')}", file=sys.stderr, flush=True)
    elif kind == "end":
        reason = frame.get("finish_reason")
        print("" if reason == "stop" else f" [{reason}]", flush=True)
    elif kind == "error":
        print(f"\n[error {frame.get('code')}] {frame.get('message')}", file=sys.stderr, flush=True)
    elif kind in ("auto_report", "broadcast"):
        print(f"\n[{kind}] {frame.get('content')}", flush=True)


async def run_terminal(
    url: str, client_id: str, project_id: str, agent_name: str, thread_id: str, token: str | None
) -> int:
    client = DariClient(url, client_id, token=token, on_state=_status)
    printed: dict[str, int] = {}

    async def show_frames() -> None:
        async for frame in client.frames():
            _show(frame, printed, agent_name)

    try:
        async with client:
            printer = asyncio.create_task(show_frames())
            loop = asyncio.get_running_loop()
            sent: list[str] = []
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line or line.strip() == "/quit":
                    break
                if line.strip():
                    sent.append(
                        await client.chat(
                            line.rstrip("\n"),
                            agent_name=agent_name,
                            project_id=project_id,
                            thread_id=thread_id,
                        )
                    )
            if not line:  # end of input (a pipe): let the answers finish first
                for request_id in sent:
                    await client.answer(request_id, timeout=300)
            printer.cancel()
    except ClientClosed as closed:
        print(f"dari: {closed}", file=sys.stderr)
        return 1
    return 0
