"""A handshake refused for the per-user connection cap claims nothing: the cap, like every
refusal, comes before the client_id is taken, so the id stays free for anyone."""

from __future__ import annotations

from typing import Any

from websockets.asyncio.client import connect

from tests.conftest import ServerFactory
from tests.security.conftest import HS_AUTH, TWO_PROJECTS, bearer, handshake, refused, token

SETTINGS: dict[str, Any] = {
    "auth": HS_AUTH,
    "projects": TWO_PROJECTS,
    "limits": {"max_connections_per_user": 1},
}


async def test_a_handshake_refused_for_the_cap_claims_no_client_id(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(**SETTINGS)
    alice = bearer(token("alice", projects=["p1"]))
    async with connect(server.ws("/ws/chat/alice-1"), additional_headers=alice) as first:
        assert "welcome" in await first.recv()
        over = await refused(server.ws("/ws/chat/alice-2"), alice)
        assert (over.close_code, over.close_reason) == (1008, "too many connections")
        # A replacement of alice-1 is not one more socket: it is let in.
        again = await handshake(server.ws("/ws/chat/alice-1"), alice)
        assert again.welcome is not None
    # alice-2 was never alice's: another user may take it.
    bob = await handshake(server.ws("/ws/chat/alice-2"), bearer(token("bob", projects=["p1"])))
    assert bob.welcome is not None and bob.welcome["type"] == "welcome"
