"""Every refused handshake (4401, 4403, 1008, or HTTP 403 for a foreign origin) is logged at
info without the token and counted in dari_refusals_total by code."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import ServerFactory
from tests.security.conftest import HS_AUTH, TWO_PROJECTS, bearer, handshake, refused, token

SETTINGS: dict[str, Any] = {
    "auth": {**HS_AUTH, "allowed_origins": ["https://chat.example"]},
    "projects": TWO_PROJECTS,
    "limits": {"max_connections_per_user": 1},
    "default_project": "p1",
    "default_agent": "echo",
}


def refusals(code: str) -> float:
    return REGISTRY.get_sample_value("dari_refusals_total", {"code": code}) or 0.0


async def test_refusals_are_logged_without_secrets_and_counted_by_code(
    server_factory: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await server_factory(**SETTINGS)
    counts = {code: refusals(code) for code in ("403", "1008", "4401", "4403")}
    bad = token("mallory", projects=["p1"], iss="https://elsewhere.example")
    with caplog.at_level(logging.INFO, logger="dari.refusals"):
        unauthorized = await refused(server.ws(f"/ws/chat/m-1?token={bad}"))
        async with connect(
            server.ws("/ws/chat/owned"), additional_headers=bearer(token("owen"))
        ) as owner:
            await owner.recv()
            foreign = await refused(server.ws("/ws/chat/owned"), bearer(token("bob")))
            capped = await refused(server.ws("/ws/chat/owen-2"), bearer(token("owen")))
        with pytest.raises(InvalidStatus) as origin:
            await handshake(
                server.ws("/ws/chat/o-1"),
                bearer(token("olga")),
                origin="https://evil.example",
            )
    assert (unauthorized.close_code, foreign.close_code, capped.close_code) == (4401, 4403, 1008)
    assert origin.value.response.status_code == 403
    assert {code: refusals(code) - counts[code] for code in counts} == {
        "403": 1,
        "1008": 1,
        "4401": 1,
        "4403": 1,
    }
    logged = [r for r in caplog.records if r.name == "dari.refusals"]
    assert [r.levelno for r in logged] == [logging.INFO] * 4
    text = "\n".join(r.getMessage() for r in logged)
    assert "token issuer not accepted" in text and "/ws/chat/m-1" in text
    assert bad not in text and "token=" not in text
