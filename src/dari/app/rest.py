"""REST under /api: projects and agents, history, tasks, reports, broadcast, UI config."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from dari import __version__
from dari.app.credentials import credentials_of
from dari.app.gateway import Gateway
from dari.app.origin import origin_allowed
from dari.auth.base import ALL, Principal
from dari.protocol.errors import AccessError, ErrorCode, LookupFailed
from dari.protocol.frames import DEFAULT_THREAD

router = APIRouter(prefix="/api")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def principal_of(request: Request) -> Principal:
    gateway = gateway_of(request)
    credentials = credentials_of(
        request, gateway.settings.auth.cookie_name, allow_query_token=False
    )
    if (
        credentials.bearer is None
        and credentials.cookie is not None
        and request.method not in _SAFE_METHODS
        and not origin_allowed(request, gateway.settings)
    ):
        # A cookie rides along on cross-site requests (SameSite does not stop a sibling
        # subdomain): a change made by cookie must come from an allowed origin.
        raise AccessError("cross-origin request refused", code=ErrorCode.FORBIDDEN)
    return gateway.authenticator.authenticate(credentials)


GatewayDep = Annotated[Gateway, Depends(gateway_of)]
PrincipalDep = Annotated[Principal, Depends(principal_of)]


@router.get("/config")
async def config(gateway: GatewayDep) -> dict[str, Any]:
    settings = gateway.settings
    return {
        "auth": settings.auth.mode,
        "max_message_bytes": settings.limits.max_message_bytes,
        "max_image_bytes": settings.limits.max_image_bytes,
        "max_images": settings.limits.max_images,
        "heartbeat_s": settings.heartbeat_s,
        "server_version": __version__,
        "default_project": settings.default_project,
        "default_agent": settings.default_agent,
        # A provider to sign in with (authorization code + PKCE in the page), when configured.
        "oidc": settings.auth.oidc.public()
        if settings.auth.mode == "jwt" and settings.auth.oidc
        else None,
    }


@router.get("/projects")
async def projects(gateway: GatewayDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    directory = gateway.directory
    return [
        {
            "id": project.id,
            "name": project.name or project.id,
            "agents": [
                agent.to_wire()
                for agent in directory.agents(project.id)
                if principal.can_use(project.id, agent.name)
            ],
        }
        for project in directory.projects()
        if principal.can_see_project(project.id)
    ]


@router.get("/projects/{project_id}/agents")
async def agents(
    project_id: str, gateway: GatewayDep, principal: PrincipalDep
) -> list[dict[str, Any]]:
    principal.require(project_id)
    return [
        agent.to_wire()
        for agent in gateway.directory.agents(project_id)
        if principal.can_use(project_id, agent.name)
    ]


async def _set_running(
    project_id: str, agent_name: str, running: bool, gateway: Gateway, principal: Principal
) -> dict[str, Any]:
    principal.require_admin()
    principal.require(project_id, agent_name)
    return gateway.directory.set_running(project_id, agent_name, running).to_wire()


@router.post("/projects/{project_id}/agents/{agent_name}/start")
async def start_agent(
    project_id: str, agent_name: str, gateway: GatewayDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await _set_running(project_id, agent_name, True, gateway, principal)


@router.post("/projects/{project_id}/agents/{agent_name}/stop")
async def stop_agent(
    project_id: str, agent_name: str, gateway: GatewayDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await _set_running(project_id, agent_name, False, gateway, principal)


@router.get("/projects/{project_id}/agents/{agent_name}/threads/{thread_id}/messages")
async def messages(
    project_id: str,
    agent_name: str,
    thread_id: str,
    gateway: GatewayDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    return await gateway.conversations.history(
        principal, project_id, agent_name, thread_id, limit, before
    )


@router.get("/projects/{project_id}/tasks/{task_id}")
async def task(
    project_id: str, task_id: str, gateway: GatewayDep, principal: PrincipalDep
) -> dict[str, Any]:
    principal.require(project_id)
    record = await gateway.store.get_task(task_id)
    if (
        record is None
        or record.project_id != project_id
        # A task's result is part of its origin's conversation: private like it.
        or (
            record.origin is not None
            and not await gateway.conversations.may_use(principal, record.origin)
        )
    ):
        raise LookupFailed(f"task {task_id!r} not found", code=ErrorCode.NOT_FOUND)
    return record.to_wire()


class ReportIn(BaseModel):
    content: str = Field(min_length=1, max_length=100_000)
    agent_name: str = Field(min_length=1, max_length=128)
    thread_id: str = Field(default=DEFAULT_THREAD, min_length=1, max_length=128)
    task_id: str | None = Field(default=None, max_length=128)
    # Whose default thread gets it when that thread is per user (default: the caller's).
    user_id: str | None = Field(default=None, min_length=1, max_length=256)


@router.post("/projects/{project_id}/reports", status_code=201)
async def report(
    project_id: str, body: ReportIn, gateway: GatewayDep, principal: PrincipalDep
) -> dict[str, Any]:
    """An external system reports a finished job: saved in the conversation, sent as auto_report."""
    principal.require_admin()
    # Reports are fed to the agent's model: an admin of p1 writes nothing into p2.
    principal.require(project_id, body.agent_name)
    gateway.directory.get(project_id, body.agent_name)
    origin = gateway.conversations.report_target(
        project_id, body.agent_name, body.thread_id, body.user_id or principal.user_id
    )
    await gateway.store.threads.claim(origin, body.user_id or principal.user_id)
    task_id = body.task_id or "external"
    await gateway.runner.post_report(origin, body.content, task_id, body.agent_name)
    return {"status": "sent", "task_id": task_id}


class BroadcastIn(BaseModel):
    content: str = Field(min_length=1, max_length=100_000)
    project_id: str | None = Field(default=None, max_length=128)


@router.post("/broadcast")
async def broadcast(
    body: BroadcastIn, gateway: GatewayDep, principal: PrincipalDep
) -> dict[str, Any]:
    principal.require_admin()
    if body.project_id is None:
        if ALL not in principal.projects:
            raise AccessError(
                "a broadcast to everyone needs an admin of every project; name a project_id",
                code=ErrorCode.FORBIDDEN,
            )
    else:
        principal.require(body.project_id)
        gateway.directory.project(body.project_id)
    frame: dict[str, Any] = {"type": "broadcast", "content": body.content}
    if body.project_id is not None:
        frame["project_id"] = body.project_id
    delivered = await gateway.hub.broadcast(frame, body.project_id)
    return {"delivered": delivered}
