"""``server.drain_s``: its default, its bounds, and uvicorn's own shutdown timeout after it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dari.app.server import uvicorn_config
from dari.settings import Settings


def test_the_default_is_ten_seconds() -> None:
    assert Settings.load(None).server.drain_s == 10.0


@pytest.mark.parametrize("drain_s", [0, 0.5, 30, 3600])
def test_values_that_can_work_are_taken(drain_s: float) -> None:
    assert Settings.load(None, server={"drain_s": drain_s}).server.drain_s == drain_s


@pytest.mark.parametrize(
    ("drain_s", "problem"),
    [
        (-1, "greater than or equal to 0"),
        (10_000, "less than or equal to 3600"),  # milliseconds by mistake
        ("soon", "valid number"),
    ],
)
def test_values_that_cannot_work_are_refused(drain_s: object, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem) as raised:
        Settings.load(None, server={"drain_s": drain_s})
    assert "server.drain_s" in str(raised.value)


@pytest.mark.parametrize("drain_s", [0, 2.5, 10, 120])
def test_uvicorn_never_cuts_the_drain_short(tmp_path: Path, drain_s: float) -> None:
    settings = Settings.load(
        None,
        server={"drain_s": drain_s},
        store={"url": f"sqlite+aiosqlite:///{tmp_path / 'dari.db'}"},
    )
    timeout = uvicorn_config(settings).timeout_graceful_shutdown
    assert timeout is not None and timeout > drain_s
