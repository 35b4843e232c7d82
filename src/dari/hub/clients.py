"""What the hub knows of one client: its principal, subscriptions and attached socket."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from dari.auth.base import ANONYMOUS, Principal
from dari.hub.connection import Connection
from dari.protocol.frames import ConversationKey


@dataclass(slots=True)
class ClientState:
    client_id: str
    user_id: str
    # What the client's current (or last) principal may see: frames of a project or agent it
    # may not use are neither fanned out to it nor replayed to it.
    principal: Principal = ANONYMOUS
    conversations: set[ConversationKey] = field(default_factory=set)
    projects: set[str] = field(default_factory=set)
    connection: Connection | None = None
    last_seen: float = field(default_factory=time.monotonic)
    ephemeral: bool = False  # sockets of the second dialect: no resume, forgotten on close


# client_id -> state, for the clients this node knows; owned by the Hub, read by deliveries.
Clients = dict[str, ClientState]
