"""The real frontend packages, installed pinned from npm, run under Node against a live server."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
_STAMP = ".dari-installed"  # the lock file's digest at the last `npm ci`


@pytest.fixture(scope="session")
def node_packages() -> Path:
    """``npm ci`` in tests/node once per lock file (the packages are pinned there)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("these tests run the frontend packages under Node.js: install node and npm")
    digest = hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()
    stamp = NODE_DIR / "node_modules" / _STAMP
    # The test workers (pytest-xdist) share the directory: one installs, the others wait.
    with (NODE_DIR / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.is_file() or stamp.read_text() != digest:
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=NODE_DIR,
                check=True,
                timeout=600,
            )
            stamp.write_text(digest)
    return NODE_DIR


async def run_node(script: str, args: dict[str, Any], timeout: float = 60) -> Any:
    """Run ``tests/node/<script>`` with ``args`` as JSON; its last stdout line, parsed."""
    process = await asyncio.create_subprocess_exec(
        "node",
        script,
        json.dumps(args),
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise AssertionError(f"node {script} failed ({process.returncode}):\n{stderr.decode()}")
    return json.loads(stdout.decode().strip().splitlines()[-1])
