"""Auth off on a public address refuses to start; JWT settings are checked before listening."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dari.app.gateway import ConfigError, Gateway
from dari.settings import Settings
from tests.security.conftest import SECRET


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DARI_")}
    return subprocess.run(
        [sys.executable, "-m", "dari.cli", "serve", *args],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,  # a server that starts instead of refusing fails here
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_auth_none_on_a_public_address_refuses_to_start(tmp_path: Path, host: str) -> None:
    result = serve(tmp_path, "--host", host, "--port", str(free_port()))
    assert result.returncode != 0
    # The message says how to turn auth on.
    assert "auth.mode" in result.stderr and "jwt" in result.stderr
    assert "DARI_AUTH__MODE=jwt" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before opening the store


def test_bad_jwt_settings_refuse_to_start(tmp_path: Path) -> None:
    result = serve(
        tmp_path, "--port", str(free_port()), DARI_AUTH__MODE="jwt", DARI_AUTH__SECRET="too-short"
    )
    assert result.returncode != 0 and "at least 32" in result.stderr
    assert "too-short" not in result.stderr  # the secret is not printed


def settings(tmp_path: Path, host: str, **auth: object) -> Settings:
    return Settings.load(
        None,
        server={"host": host, "port": 0},
        store={"url": f"sqlite+aiosqlite:///{tmp_path / 'dari.db'}"},
        auth=auth,
    )


def test_jwt_on_a_public_address_starts(tmp_path: Path) -> None:
    gateway = Gateway(settings(tmp_path, "0.0.0.0", mode="jwt", secret=SECRET))
    assert gateway.authenticator.mode == "jwt"


def test_auth_none_on_loopback_is_allowed(tmp_path: Path) -> None:
    assert Gateway(settings(tmp_path, "127.0.0.1")).authenticator.mode == "none"
    with pytest.raises(ConfigError):
        Gateway(settings(tmp_path, "192.0.2.10"))


def test_mixed_algorithms_refuse_to_build_a_gateway(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mixes HMAC"):
        Gateway(
            settings(tmp_path, "0.0.0.0", mode="jwt", secret=SECRET, algorithms=["HS256", "RS256"])
        )


def test_misspelt_settings_refuse_to_start_and_name_the_key(tmp_path: Path) -> None:
    port = str(free_port())
    result = serve(tmp_path, "--port", port, DARI_SERVER__METRICS_TOKN="metrics-s3cret")
    assert result.returncode == 2
    assert "DARI_SERVER__METRICS_TOKN" in result.stderr and "server.metrics_token" in result.stderr
    assert "metrics-s3cret" not in result.stderr
    config = tmp_path / "dari.toml"
    config.write_text('[auth]\nmode = "jwt"\nisuer = "https://issuer.example"\n')
    result = serve(tmp_path, "--config", str(config), "--port", port, DARI_AUTH__SECRET=SECRET)
    assert result.returncode == 2 and "auth.isuer" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before opening the store
