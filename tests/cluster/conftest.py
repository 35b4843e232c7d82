"""Fixtures of the cluster tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cluster.nodes import Node, cluster


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[list[Node]]:
    """Three nodes on the machine's Redis and a fresh PostgreSQL database; echo paced at 20 ms."""
    async with cluster(tmp_path, 3, delay_ms=20) as started:
        yield started
