"""A user's conversations: the ``threads`` and ``thread`` frames and their REST twins.

- ``GET /api/threads?project_id=&agent_name=&limit=&before=`` and the ``threads`` frame list the
  caller's conversations and those shared with them, newest activity first.
- ``PATCH /api/projects/{p}/agents/{a}/threads/{t}`` ``{"title": "…" | null}`` renames;
  ``DELETE`` on it deletes its history; ``POST …/share`` and ``…/unshare`` share it with the
  project or make it private again. The ``thread`` frame does the same with an ``action``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from dari.app.gateway import Gateway
from dari.app.rest import GatewayDep, PrincipalDep
from dari.auth.base import Principal
from dari.protocol.frames import Frame, ThreadIn, ThreadsIn

router = APIRouter(prefix="/api")


async def thread_frame(
    gateway: Gateway, principal: Principal, frame: ThreadsIn | ThreadIn
) -> Frame:
    """The answer to a ``threads`` or ``thread`` frame."""
    conversations = gateway.conversations
    if isinstance(frame, ThreadsIn):
        listing = await conversations.listing(
            principal,
            project_id=frame.project_id,
            agent_name=frame.agent_name,
            limit=frame.limit,
            before=frame.before,
        )
        return {"type": "threads", **listing}
    done = await conversations.act(
        principal, frame.action, frame.project_id, frame.agent_name, frame.thread_id, frame.title
    )
    return {"type": "thread", **done}


@router.get("/threads")
async def threads(
    gateway: GatewayDep,
    principal: PrincipalDep,
    project_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    agent_name: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    return await gateway.conversations.listing(
        principal, project_id=project_id, agent_name=agent_name, limit=limit, before=before
    )


class RenameIn(BaseModel):
    title: str | None = Field(min_length=1, max_length=200)


_THREAD = "/projects/{project_id}/agents/{agent_name}/threads/{thread_id}"


@router.patch(_THREAD)
async def rename(
    project_id: str,
    agent_name: str,
    thread_id: str,
    body: RenameIn,
    gateway: GatewayDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    return await gateway.conversations.act(
        principal, "rename", project_id, agent_name, thread_id, body.title
    )


@router.delete(_THREAD)
async def delete(
    project_id: str, agent_name: str, thread_id: str, gateway: GatewayDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await gateway.conversations.act(principal, "delete", project_id, agent_name, thread_id)


@router.post(_THREAD + "/share")
async def share(
    project_id: str, agent_name: str, thread_id: str, gateway: GatewayDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await gateway.conversations.act(principal, "share", project_id, agent_name, thread_id)


@router.post(_THREAD + "/unshare")
async def unshare(
    project_id: str, agent_name: str, thread_id: str, gateway: GatewayDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await gateway.conversations.act(principal, "unshare", project_id, agent_name, thread_id)
