"""The projects and agents this gateway serves, and whether each agent is running."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dari.agents.base import AgentBackend
from dari.agents.registry import build_backend
from dari.protocol.errors import ErrorCode, LookupFailed, Unavailable
from dari.settings import AgentConfig, ProjectConfig, Settings


@dataclass(slots=True)
class Agent:
    project_id: str
    config: AgentConfig
    backend: AgentBackend
    running: bool

    @property
    def name(self) -> str:
        return self.config.name

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "description": self.config.description,
            "backend": self.config.backend,
            "running": self.running,
            "policy": self.config.policy,
        }


class AgentDirectory:
    def __init__(self, settings: Settings) -> None:
        self._projects: dict[str, ProjectConfig] = {p.id: p for p in settings.projects}
        self._agents: dict[tuple[str, str], Agent] = {}
        for project in settings.projects:
            for config in project.agents:
                backend = build_backend(config, settings)
                self._agents[(project.id, config.name)] = Agent(
                    project.id, config, backend, config.running
                )

    async def start(self) -> None:
        for agent in self._agents.values():
            await agent.backend.start()

    async def aclose(self) -> None:
        for agent in self._agents.values():
            await agent.backend.aclose()

    def projects(self) -> list[ProjectConfig]:
        return list(self._projects.values())

    def project(self, project_id: str) -> ProjectConfig:
        project = self._projects.get(project_id)
        if project is None:
            raise LookupFailed(
                f"project {project_id!r} not found", code=ErrorCode.PROJECT_NOT_FOUND
            )
        return project

    def agents(self, project_id: str) -> list[Agent]:
        self.project(project_id)
        return [agent for (pid, _), agent in self._agents.items() if pid == project_id]

    def get(self, project_id: str, agent_name: str) -> Agent:
        self.project(project_id)
        agent = self._agents.get((project_id, agent_name))
        if agent is None:
            raise LookupFailed(
                f"agent {agent_name!r} not found in project {project_id!r}",
                code=ErrorCode.AGENT_NOT_FOUND,
            )
        return agent

    def get_running(self, project_id: str, agent_name: str) -> Agent:
        agent = self.get(project_id, agent_name)
        if not agent.running:
            raise Unavailable(f"agent {agent_name!r} is stopped", code=ErrorCode.AGENT_NOT_RUNNING)
        return agent

    def set_running(self, project_id: str, agent_name: str, running: bool) -> Agent:
        agent = self.get(project_id, agent_name)
        agent.running = running
        return agent
