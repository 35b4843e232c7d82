"""The protocol layer stays pure: no event loop, web framework, network, database or other dari
layers. Checked by parsing the source with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "src" / "dari" / "protocol"
PACKAGE = "dari.protocol"

FORBIDDEN_TOP_LEVEL = frozenset(
    {
        "asyncio",
        "starlette",
        "fastapi",
        "uvicorn",
        "websockets",
        "sqlalchemy",
        "redis",
        "httpx",
        "socket",
    }
)
DYNAMIC_IMPORTERS = frozenset({"import_module", "__import__"})


def _resolve_relative(module: str | None, level: int, package: str) -> str:
    parts = package.split(".")
    base = parts[: len(parts) - (level - 1)] if level > 1 else parts
    return ".".join([*base, module] if module else base)


def imported_modules(source: str, package: str = PACKAGE) -> list[str]:
    """Every module named by an import statement or a literal dynamic import, anywhere in
    ``source`` (also inside functions and ``if TYPE_CHECKING`` blocks)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(node.module, node.level, package)
                found.append(base)
                if node.module is None:  # from . import x: x may be a module
                    found.extend(f"{base}.{alias.name}" for alias in node.names)
            elif node.module is not None:
                found.append(node.module)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if (
                name in DYNAMIC_IMPORTERS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.append(node.args[0].value)
    return found


def is_forbidden(module: str) -> bool:
    top = module.split(".")[0]
    if top == "dari":
        return module != PACKAGE and not module.startswith(PACKAGE + ".")
    return top in FORBIDDEN_TOP_LEVEL


def violations(source: str, package: str = PACKAGE) -> list[str]:
    return [module for module in imported_modules(source, package) if is_forbidden(module)]


def protocol_files() -> list[Path]:
    return sorted(PROTOCOL_DIR.rglob("*.py"))


def test_protocol_package_is_found() -> None:
    names = {path.name for path in protocol_files()}
    assert {"frames.py", "codec.py", "resume.py", "sequence.py", "ratelimit.py"} <= names


@pytest.mark.parametrize("path", protocol_files(), ids=lambda p: p.name)
def test_protocol_module_imports_nothing_outside_the_pure_layer(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")) == [], (
        f"{path.relative_to(PROTOCOL_DIR.parents[1])} imports something the protocol layer must not"
    )


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import socket as s",
        "import sqlalchemy.ext.asyncio",
        "from starlette.websockets import WebSocket",
        "from fastapi import FastAPI",
        "import uvicorn, json",
        "from websockets.asyncio.client import connect",
        "import redis.asyncio",
        "import httpx",
        "from dari.hub.replay import MemoryReplayLog",
        "from dari import settings",
        "import dari.stores",
        "from .. import hub",
        "from ..app import images",
        "def f():\n    import asyncio",
        "if TYPE_CHECKING:\n    from sqlalchemy import Table",
        "import importlib\nimportlib.import_module('asyncio')",
        "__import__('socket')",
    ],
)
def test_checker_catches_forbidden_imports(source: str) -> None:
    assert violations(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import json, re",
        "import orjson",
        "from pydantic import BaseModel",
        "from dari.protocol.errors import ErrorCode",
        "from dari.protocol import frames",
        "from . import frames",
        "from .errors import ProtocolError",
        "import dari.protocol.codec",
        "import asyncio_helpers_that_are_not_asyncio",
    ],
)
def test_checker_allows_pure_imports(source: str) -> None:
    assert violations(source) == []
