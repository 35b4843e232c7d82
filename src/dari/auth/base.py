"""Principals and the one place where access is decided.

Every check (handshake, ``chat``, ``subscribe``, ``history``, ``cancel``, resume, REST) goes
through :class:`Principal` and an :class:`Authenticator`, so auth modes plug in without
touching handlers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dari.protocol.errors import AccessError, ErrorCode

ALL = "*"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    projects: frozenset[str] = frozenset({ALL})
    # project -> agents allowed there; a project absent here allows all its agents.
    agents: Mapping[str, frozenset[str]] = field(default_factory=dict)
    admin: bool = False
    expires_at: float | None = None  # unix time; the socket is closed when it passes

    def can_see_project(self, project_id: str) -> bool:
        return ALL in self.projects or project_id in self.projects

    def can_use(self, project_id: str, agent_name: str | None) -> bool:
        if not self.can_see_project(project_id):
            return False
        if agent_name is None:
            return True
        allowed = self.agents.get(project_id, self.agents.get(ALL))
        return allowed is None or ALL in allowed or agent_name in allowed

    @property
    def unrestricted(self) -> bool:
        return ALL in self.projects and not self.agents

    def can_see_frame(self, frame: Mapping[str, object]) -> bool:
        """Whether a frame meant for this client may reach it (fan-out and replay alike).

        A report belongs to the conversation it is saved in (``origin_agent``).
        """
        if self.unrestricted:
            return True
        project = frame.get("project_id")
        if not isinstance(project, str):
            return True  # not tied to a project: pong, welcome, all-hands broadcast
        agent = frame.get("origin_agent", frame.get("agent_name"))
        return self.can_use(project, agent if isinstance(agent, str) else None)

    def require(self, project_id: str, agent_name: str | None = None) -> None:
        if not self.can_use(project_id, agent_name):
            target = f"{project_id}/{agent_name}" if agent_name else project_id
            raise AccessError(f"no access to {target}", code=ErrorCode.FORBIDDEN)

    def require_admin(self) -> None:
        if not self.admin:
            raise AccessError("this needs an admin token", code=ErrorCode.FORBIDDEN)

    def to_json(self) -> dict[str, Any]:
        """Plain data, for a job queued in Redis to carry its user's rights to another node."""
        return {
            "user_id": self.user_id,
            "projects": sorted(self.projects),
            "agents": {project: sorted(names) for project, names in self.agents.items()},
            "admin": self.admin,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Principal:
        return cls(
            user_id=data["user_id"],
            projects=frozenset(data["projects"]),
            agents={project: frozenset(names) for project, names in data["agents"].items()},
            admin=bool(data["admin"]),
            expires_at=data["expires_at"],
        )


ANONYMOUS = Principal(user_id="anonymous", admin=True)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request offers to prove who it is."""

    bearer: str | None = None  # Authorization: Bearer
    query_token: str | None = None  # ?token=
    cookie: str | None = None  # session cookie set by the UI

    def token(self) -> str | None:
        return self.bearer or self.query_token or self.cookie


class Authenticator(ABC):
    mode: str

    @abstractmethod
    def authenticate(self, credentials: Credentials) -> Principal:
        """Return the principal, or raise :class:`AccessError` with code ``unauthorized``."""


class NoAuth(Authenticator):
    """Everyone is the same anonymous user with access to everything (loopback only)."""

    mode = "none"

    def authenticate(self, credentials: Credentials) -> Principal:
        return ANONYMOUS
