"""Shared pieces of the security suite: tokens, keys, handshakes, and an error-log watch."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory
from tests.support.server import RunningServer

SECRET = "dari-security-suite-secret-0123456789-abcdef"
AUDIENCE = "dari-gateway"
ISSUER = "https://issuer.example"
DROP = object()  # a claim value meaning "leave this claim out"

HS_AUTH: dict[str, Any] = {
    "mode": "jwt",
    "algorithms": ["HS256"],
    "secret": SECRET,
    "audience": AUDIENCE,
    "issuer": ISSUER,
    "leeway_s": 5,
    # Below the ~8 KiB header line the WebSocket layer accepts, so the size check is ours.
    "max_token_bytes": 2048,
}


def _agent(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "backend": "echo", **extra}


# Two projects, each with a fast and a slow echo agent.
TWO_PROJECTS: list[dict[str, Any]] = [
    {"id": pid, "agents": [_agent("echo"), _agent("slow", options={"delay_ms": 40})]}
    for pid in ("p1", "p2")
]


def claims(
    sub: Any = "alice", *, projects: Any = ("*",), ttl: float = 600, **extra: Any
) -> dict[str, Any]:
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": sub,
        "iat": now,
        "exp": now + ttl,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "projects": list(projects) if isinstance(projects, tuple) else projects,
    }
    payload.update(extra)
    return {k: v for k, v in payload.items() if v is not DROP}


def token(
    sub: Any = "alice",
    *,
    key: Any = SECRET,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
    **extra: Any,
) -> str:
    return jwt.encode(claims(sub, **extra), key, algorithm=algorithm, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand, for what PyJWT refuses to produce (alg none, confusion)."""
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(payload).encode())
    return f"{head}.{body}.{b64(signature)}"


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


# --- handshakes ----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a handshake ended in: the first frame (accepted) or the close code (refused)."""

    welcome: dict[str, Any] | None
    close_code: int | None
    close_reason: str = ""
    frames: list[dict[str, Any]] = field(default_factory=list)


async def handshake(url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Outcome:
    """Connect, read the first frame or the close, and hang up."""
    async with connect(
        url, additional_headers=headers, compression=None, open_timeout=10, **kwargs
    ) as ws:
        try:
            async with asyncio.timeout(10):
                first = json.loads(await ws.recv())
        except ConnectionClosed:
            return Outcome(None, ws.close_code, ws.close_reason or "")
        return Outcome(first, None, frames=[first])


async def refused(url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Outcome:
    """Connect and collect everything until the server closes (which it must, quickly)."""
    async with connect(
        url, additional_headers=headers, compression=None, open_timeout=10, **kwargs
    ) as ws:
        frames: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(10):
                async for message in ws:
                    frames.append(json.loads(message))
        except ConnectionClosed:
            pass
        return Outcome(None, ws.close_code, ws.close_reason or "", frames)


# --- keys ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    private: Any
    private_pem: bytes
    public_pem: bytes
    private_file: Path
    public_file: Path


def _write_pair(directory: Path, name: str, private: Any) -> KeyPair:
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (directory / f"{name}.key").write_bytes(private_pem)
    (directory / f"{name}.pub").write_bytes(public_pem)
    return KeyPair(
        private, private_pem, public_pem, directory / f"{name}.key", directory / f"{name}.pub"
    )


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    directory = tmp_path_factory.mktemp("keys")
    return {
        "rsa": _write_pair(directory, "rsa", rsa.generate_private_key(65537, 2048)),
        "rsa_other": _write_pair(directory, "rsa_other", rsa.generate_private_key(65537, 2048)),
        "ec": _write_pair(directory, "ec", ec.generate_private_key(ec.SECP256R1())),
    }


# --- watching the server's error log -------------------------------------------------------


class ErrorWatch(logging.Handler):
    """Records ERROR records of the gateway, uvicorn and asyncio (unhandled exceptions)."""

    NAMES = ("dari", "uvicorn", "uvicorn.error", "asyncio")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not any(seen is record for seen in self.records):  # uvicorn.error propagates to uvicorn
            self.records.append(record)

    def watch(self) -> None:
        # uvicorn's dictConfig drops handlers when a server starts: (re)attach after starting.
        for name in self.NAMES:
            logger = logging.getLogger(name)
            if self not in logger.handlers:
                logger.addHandler(self)

    def unwatch(self) -> None:
        for name in self.NAMES:
            logging.getLogger(name).removeHandler(self)

    def messages(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records]


@pytest.fixture
def errors() -> Iterator[ErrorWatch]:
    watch = ErrorWatch()
    watch.watch()
    yield watch
    watch.unwatch()


async def start(
    server_factory: ServerFactory, watch: ErrorWatch | None = None, **overrides: Any
) -> RunningServer:
    server = await server_factory(**overrides)
    if watch is not None:
        watch.watch()
    return server
