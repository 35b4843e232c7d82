"""Which backend kinds exist, imported only when an agent uses them."""

from __future__ import annotations

import importlib

from dari.agents.base import AgentBackend
from dari.settings import AgentConfig, Settings

# kind -> (module, class, extra that provides its dependencies)
BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "echo": ("dari.agents.echo", "EchoBackend", None),
    "offline": ("dari.agents.offline", "OfflineBackend", None),
    "python": ("dari.agents.python", "PythonBackend", None),
    "openai": ("dari.agents.openai", "OpenAIBackend", "openai"),
    "langgraph": ("dari.agents.langgraph", "LangGraphBackend", "langgraph"),
    "ag-ui": ("dari.agents.ag_ui", "AgUiBackend", None),
}


class BackendUnavailable(Exception):
    """A configured backend cannot be used (unknown kind or missing extra)."""


def build_backend(config: AgentConfig, settings: Settings) -> AgentBackend:
    entry = BACKENDS.get(config.backend)
    if entry is None:
        known = ", ".join(sorted(BACKENDS))
        raise BackendUnavailable(
            f"agent {config.name!r}: unknown backend {config.backend!r} (known: {known})"
        )
    module_name, class_name, extra = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f" Install it with: pip install 'dari[{extra}]'" if extra else ""
        raise BackendUnavailable(
            f"agent {config.name!r}: backend {config.backend!r} is not installed"
            f" ({exc.name}).{hint}"
        ) from exc
    backend_class: type[AgentBackend] = getattr(module, class_name)
    return backend_class(config, settings)
