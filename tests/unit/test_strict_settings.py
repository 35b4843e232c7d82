"""Misspelt settings refuse to start and name the key: in every table of the file and in
``DARI_*`` variables. Variables that are not settings but belong to dari stay allowed."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from dari.agents.registry import build_backend
from dari.settings import AgentConfig, Settings, UnknownSettingError, unknown_env_settings


@pytest.fixture(autouse=True)
def no_dari_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test sets (the test command exports a switch of its own)."""
    for name in list(os.environ):
        if name.upper().startswith("DARI_"):
            monkeypatch.delenv(name)


def load(tmp_path: Path, toml: str) -> Settings:
    config = tmp_path / "dari.toml"
    config.write_text(toml, encoding="utf-8")
    return Settings.load(config)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("heartbeat = 5\n", "heartbeat"),
        ('[server]\nmetrics_tokn = "s3cret-value"\n', "server.metrics_tokn"),
        ('[store]\nurll = "sqlite+aiosqlite:///x.db"\n', "store.urll"),
        ('[bus]\nur = "memory://"\n', "bus.ur"),
        ("[replay]\nmax_frame = 10\n", "replay.max_frame"),
        ("[limits]\nqueue_sise = 3\n", "limits.queue_sise"),
        ('[auth]\nisuer = "https://issuer.example"\n', "auth.isuer"),
        ("[cluster]\nlease_ms = 10\n", "cluster.lease_ms"),
        ('[[projects]]\nid = "p"\nnme = "P"\n', "projects.0.nme"),
        (
            '[[projects]]\nid = "p"\n[[projects.agents]]\nname = "a"\nbacknd = "echo"\n',
            "projects.0.agents.0.backnd",
        ),
    ],
)
def test_an_unknown_key_in_any_table_is_refused_by_name(
    tmp_path: Path, toml: str, key: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        load(tmp_path, toml)
    message = str(raised.value)
    assert key in message and "Extra inputs are not permitted" in message
    assert "s3cret-value" not in message  # a value may be a secret: it is not repeated


@pytest.mark.parametrize(
    ("name", "says"),
    [
        (
            "DARI_SERVER__METRICS_TOKN",
            "server has no setting 'metrics_tokn'; did you mean server.metrics_token?",
        ),
        ("DARI_FOO", "the top level has no setting 'foo'"),
        ("DARI_AUTH__ISUER", "did you mean auth.issuer?"),
        ("DARI_SERVER_PORT", "no setting 'server_port'"),  # one underscore: not nested
        ("DARI_STORE__URL__X", "store.url has no keys under it"),
        ("dari_limits__queue_sise", "limits has no setting 'queue_sise'"),  # any case
    ],
)
def test_an_unknown_variable_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str, says: str
) -> None:
    monkeypatch.setenv(name, "s3cret-value")
    with pytest.raises(UnknownSettingError) as raised:
        Settings.load(None)
    message = str(raised.value)
    assert name in message and says in message
    assert "s3cret-value" not in message


def test_every_unknown_variable_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DARI_FOO", "1")
    monkeypatch.setenv("DARI_BUS__URLL", "redis://x")
    with pytest.raises(UnknownSettingError, match=r"DARI_BUS__URLL.*DARI_FOO"):
        Settings.load(None)


def test_known_variables_still_set_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DARI_STORE__URL", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("DARI_SERVER__METRICS_TOKEN", "m")
    monkeypatch.setenv("dari_limits__queue_size", "3")
    monkeypatch.setenv("DARI_AUTH__ALLOWED_ORIGINS", '["https://chat.example"]')
    monkeypatch.setenv("DARI_PROJECTS", '[{"id": "p", "agents": [{"name": "a"}]}]')
    monkeypatch.setenv("DARI_NODE_ID", "node-7")
    settings = Settings.load(None)
    assert settings.store.url.endswith("x.db") and settings.limits.queue_size == 3
    assert settings.server.metrics_token is not None
    assert settings.auth.allowed_origins == ["https://chat.example"]
    assert [p.id for p in settings.projects] == ["p"] and settings.effective_node_id == "node-7"


def test_variables_that_are_not_settings_are_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test suite's own switches, and an API key variable an agent names itself.
    monkeypatch.setenv("DARI_TEST_REQUIRE_SERVICES", "1")
    monkeypatch.setenv("DARI_E2E_CHROMIUM", "/usr/bin/chromium")
    monkeypatch.setenv("DARI_OPENAI_KEY", "sk-x")
    assert unknown_env_settings(os.environ) == [
        "DARI_OPENAI_KEY: the top level has no setting 'openai_key'"
    ]
    toml = (
        '[[projects]]\nid = "p"\n[[projects.agents]]\nname = "gpt"\nbackend = "openai"\n'
        '[projects.agents.options]\napi_key_env = "DARI_OPENAI_KEY"\n'
    )
    assert load(tmp_path, toml).projects[0].agents[0].options["api_key_env"] == "DARI_OPENAI_KEY"
    with pytest.raises(UnknownSettingError, match="DARI_OPENAI_KEY"):
        Settings.load(None)  # no agent names it: a misspelt setting as far as dari knows


# --- node identity and cluster mode ------------------------------------------------------------


def test_the_default_node_id_is_unique_per_process_and_settings() -> None:
    first, second = Settings.load(None), Settings.load(None)
    assert first.effective_node_id != second.effective_node_id
    assert first.effective_node_id == first.effective_node_id  # stable for one Settings
    assert re.fullmatch(
        rf"{re.escape(socket.gethostname()[:120])}-{os.getpid()}-[0-9a-f]{{8}}",
        first.effective_node_id,
    )
    # Replicas bound to the same address no longer share an id.
    same_address = {"server": {"host": "0.0.0.0", "port": 8000}}
    assert (
        Settings.load(None, **same_address).effective_node_id
        != Settings.load(None, **same_address).effective_node_id
    )
    assert Settings.load(None, node_id="pod-3").effective_node_id == "pod-3"


@pytest.mark.parametrize(
    ("bus", "replay", "says"),
    [
        ("memory://", "redis://127.0.0.1:6379/0", "bus.url = redis://"),
        ("redis://127.0.0.1:6379/0", "memory://", "replay.url = redis://"),
    ],
)
def test_cluster_mode_needs_redis_for_both_bus_and_replay(bus: str, replay: str, says: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(says)):
        Settings.load(None, bus={"url": bus}, replay={"url": replay})
    both = Settings.load(
        None,
        bus={"url": replay if bus == "memory://" else bus},
        replay={"url": replay if bus == "memory://" else bus},
    )
    assert both.clustered


# --- the built-in backends' options ------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "options", "says"),
    [
        ("echo", {"delay_mss": 5}, "delay_mss"),
        ("offline", {"persna": "researcher"}, "persna"),
        ("offline", {"persona": "reseacher"}, "persona"),
        ("echo", {"delay_ms": -1}, "delay_ms"),
    ],
)
def test_a_misspelt_backend_option_refuses_to_build_the_agent(
    backend: str, options: dict[str, object], says: str
) -> None:
    config = AgentConfig(name="a", backend=backend, options=options)
    with pytest.raises(ValueError, match=says) as raised:
        build_backend(config, Settings.load(None))
    assert "agent 'a'" in str(raised.value)


def test_the_built_in_backends_take_their_documented_options() -> None:
    settings = Settings.load(None)
    for backend, options in [
        ("echo", {"delay_ms": 5}),
        ("offline", {"delay_ms": 0, "persona": "researcher"}),
        ("offline", {}),
    ]:
        build_backend(AgentConfig(name="a", backend=backend, options=options), settings)


def test_a_websocket_implementation_that_is_not_installed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        load(tmp_path, '[server]\nws_backend = "wsproto"\n')
    assert "server.ws_backend" in str(refused.value).replace("\n", ".")
    assert load(tmp_path, '[server]\nws_backend = "websockets"\n').server.ws_backend == "websockets"


def test_the_switch_interval_is_bounded(tmp_path: Path) -> None:
    assert Settings().server.switch_interval_ms == 0.2
    with pytest.raises(ValidationError):
        load(tmp_path, "[server]\nswitch_interval_ms = 0\n")


@pytest.mark.parametrize("value", [-1, 251])
def test_a_gather_wait_outside_0_to_250_ms_is_refused(value: int) -> None:
    with pytest.raises(ValidationError, match="stream_gather_ms"):
        AgentConfig(name="a", backend="echo", stream_gather_ms=value)
    assert AgentConfig(name="a", backend="echo", stream_gather_ms=250).stream_gather_ms == 250
