"""Both backends are found by kind, and a missing extra names the pip command to run."""

from __future__ import annotations

import sys

import pytest

from dari.agents.langgraph import LangGraphBackend
from dari.agents.openai import OpenAIBackend
from dari.agents.registry import BackendUnavailable, build_backend
from dari.settings import AgentConfig, Settings


def test_kinds_build_their_backends() -> None:
    settings = Settings(projects=[])
    openai_agent = build_backend(AgentConfig(name="a", backend="openai"), settings)
    langgraph_agent = build_backend(AgentConfig(name="b", backend="langgraph"), settings)
    assert isinstance(openai_agent, OpenAIBackend) and openai_agent.takes_images
    assert isinstance(langgraph_agent, LangGraphBackend) and langgraph_agent.takes_images


@pytest.mark.parametrize(
    ("kind", "module", "dependency"),
    [
        ("openai", "dari.agents.openai", "openai"),
        ("langgraph", "dari.agents.langgraph", "langgraph"),
    ],
)
def test_missing_extra_is_reported_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, kind: str, module: str, dependency: str
) -> None:
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.delitem(sys.modules, module)
    for name in [n for n in sys.modules if n == dependency or n.startswith(f"{dependency}.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, dependency, None)
    with pytest.raises(BackendUnavailable, match=rf"pip install 'dari\[{kind}\]'"):
        build_backend(AgentConfig(name="a", backend=kind), Settings(projects=[]))
