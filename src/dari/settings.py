"""All settings in one place: one TOML file plus ``DARI_*`` environment variables.

Precedence, highest first: explicit arguments (e.g. CLI flags), environment variables
(``DARI_SERVER__PORT=9000``, nested with ``__``), the TOML file, the defaults below.
Engines are picked by URL: ``sqlite+aiosqlite:///…`` or ``postgresql+asyncpg://…`` for the
store, ``memory://`` (one node) or ``redis://…`` (several) for the bus and the replay log.
"""

from __future__ import annotations

import contextvars
import difflib
import ipaddress
import os
import secrets
import socket
import tomllib
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

Policy = Literal["enqueue", "interrupt", "reject"]
ENV_PREFIX = "DARI_"
# DARI_* variables that are not settings: the test suite's own switches.
NOT_SETTINGS_PREFIXES = ("DARI_TEST_", "DARI_E2E_")


class Section(BaseModel):
    """A table of the settings file. A misspelt key must refuse to start, never fall back to a
    default silently (``[auth] isuer`` would accept tokens from any issuer); values stay out of
    error messages, since some are secrets."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class AgentConfig(Section):
    name: str = Field(min_length=1, max_length=128)
    backend: str = "offline"
    description: str = ""
    running: bool = True
    policy: Policy = "enqueue"
    history_limit: int | None = Field(default=None, ge=0)
    can_delegate: bool = True
    # How long a question the agent asks (an interrupt) waits for its answer; then the answer
    # ends with interrupt_expired. The paused answer holds its conversation meanwhile.
    interrupt_timeout_s: float = Field(default=3600.0, gt=0, le=7 * 24 * 3600)
    # How long a socket may hold this agent's answer pieces so that pieces arriving meanwhile
    # go out merged in one frame (fewer frames and system calls per token; each piece waits at
    # most this long). 0: each piece goes at the writer's next turn.
    stream_gather_ms: float = Field(default=0.0, ge=0, le=250)
    options: dict[str, Any] = Field(default_factory=dict)


class ProjectConfig(Section):
    id: str = Field(min_length=1, max_length=128)
    name: str = ""
    agents: list[AgentConfig] = Field(default_factory=list)
    # Threads every user of the project sees (a team room); all others are private to the
    # user who started them. "main" here makes the default thread one shared conversation.
    shared_threads: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _unique_agents(self) -> ProjectConfig:
        names = [agent.name for agent in self.agents]
        duplicates = {name for name in names if names.count(name) > 1}
        if duplicates:
            raise ValueError(f"project {self.id!r} declares agent(s) twice: {sorted(duplicates)}")
        return self


def default_projects() -> list[ProjectConfig]:
    return [
        ProjectConfig(
            id="project_001",
            name="Demo project",
            agents=[
                AgentConfig(
                    name="집사",
                    backend="offline",
                    description="Friendly offline assistant; try /delegate researcher <task>",
                ),
                AgentConfig(name="echo", backend="echo", description="Answers with your own words"),
                AgentConfig(
                    name="researcher",
                    backend="offline",
                    description="Offline agent that takes delegated tasks",
                    options={"persona": "researcher"},
                ),
                AgentConfig(
                    name="archivist",
                    backend="offline",
                    description="Stopped until someone starts it",
                    running=False,
                ),
            ],
        )
    ]


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # uvicorn's WebSocket implementation ("wsproto" is not offered: it is not installed).
    ws_backend: Literal["auto", "websockets-sansio", "websockets"] = "websockets-sansio"
    per_message_deflate: bool = False
    handshake_timeout_s: float = Field(default=10.0, gt=0)
    # A connection whose request line and headers have not all arrived this long after it
    # opened (or after its next request began) gets 408 and is closed: slowloris.
    header_timeout_s: float = Field(default=10.0, gt=0)
    # Open TCP connections (WebSocket or not) past which a new one gets 503 and is closed.
    # Behind a proxy every connection comes from its address: raise the per-IP cap to match.
    max_connections: int = Field(default=10_000, ge=1)
    max_connections_per_ip: int = Field(default=2_000, ge=1)
    # On SIGTERM, how long answers running here may take to finish before they are cut
    # (saved as cancelled). At most an hour: a value in milliseconds would hang a rollout.
    drain_s: float = Field(default=10.0, ge=0, le=3600)
    # With a value, /metrics answers only `Authorization: Bearer <metrics_token>` (401 else);
    # without, it is open, as Prometheus endpoints usually are (bind or firewall it).
    metrics_token: SecretStr | None = None
    # How long a thread (the SQLite store's) waits for the interpreter while the event loop
    # is busy: Python's default, 5 ms per hand-over, makes every store write queue behind a
    # saturated loop (new answers then start hundreds of milliseconds late).
    switch_interval_ms: float = Field(default=0.2, gt=0, le=100)
    # A full garbage collection runs once the old generation has doubled since the last one
    # and grown by at least this many objects (src/dari/collector.py); 0: CPython's schedule,
    # a full collection whenever it grew by a quarter (pauses that grow with the heap).
    gc_full_growth: int = Field(default=500_000, ge=0)

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class StoreSettings(Section):
    url: str = "sqlite+aiosqlite:///./data/dari.db"
    checkpoint_s: float = Field(default=1.0, gt=0)  # partial answers are saved this often

    @field_validator("url")
    @classmethod
    def _known_engine(cls, url: str) -> str:
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "store.url must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        return url


class BusSettings(Section):
    url: str = "memory://"


class ReplaySettings(Section):
    url: str = "memory://"
    max_frames: int = Field(default=10_000, ge=1)
    max_age_s: float = Field(default=600.0, gt=0)
    idle_client_ttl_s: float = Field(default=3600.0, gt=0)  # forget absent clients after this
    # Bytes of frames kept per client and over all clients (memory engine; Redis: per client).
    # Past a client's budget its oldest frames go; past the total, the oldest frames of clients
    # with no socket attached go first. Their resume then answers `expired`.
    max_client_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024)
    max_total_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)


class LimitsSettings(Section):
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    # The WebSocket layer's hard cap: frames between the two limits get a `too_large` error;
    # past this one the socket is closed with 1009 before the message is buffered whole.
    # Default: twice max_message_bytes.
    ws_max_bytes: int | None = Field(default=None, ge=1024)

    @property
    def hard_max_bytes(self) -> int:
        return self.ws_max_bytes or 2 * self.max_message_bytes

    # A `history` reply (frame or REST) holds at most this many bytes: fewer messages and
    # `more: true` past it. Default: twice max_message_bytes, so any chat accepted fits whole.
    max_history_bytes: int | None = Field(default=None, ge=16 * 1024)

    @property
    def history_max_bytes(self) -> int:
        return self.max_history_bytes or 2 * self.max_message_bytes

    # Decoded size of one image. Base64 adds a third, so a 512 KiB image fits in a 1 MiB frame.
    max_image_bytes: int = Field(default=512 * 1024, ge=1)
    max_images: int = Field(default=4, ge=0)
    # Hosts whose http(s) image URLs a chat may carry. Empty: images only as data: URLs, since
    # a URL is fetched by the model's provider (or this network) and shown in other members'
    # browsers: http://127.0.0.1:6379/ must not be either.
    image_url_hosts: list[str] = Field(default_factory=list)

    @field_validator("image_url_hosts")
    @classmethod
    def _bare_host_names(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not host or any(c in host for c in "/:@?#* \t"):
                raise ValueError(
                    f"limits.image_url_hosts: {host!r} is not a host name "
                    "(give names like cdn.example.com, without scheme, port or path)"
                )
        return [host.lower().rstrip(".") for host in hosts]

    queue_size: int = Field(default=16, ge=1)  # chats waiting per conversation
    history_limit: int = Field(default=50, ge=0)  # messages given to the agent
    send_timeout_s: float = Field(default=15.0, gt=0)  # a stalled socket is closed 1013 after
    max_lag_frames: int = Field(default=2000, ge=10)  # unsent frames before closing 1013
    # Frames per user over all of its connections (and nodes); with auth.mode = "none", per
    # client_id. A reconnect does not refill the bucket.
    rate_per_s: float = Field(default=20.0, gt=0)
    rate_burst: float = Field(default=60.0, gt=0)
    rate_strikes_before_close: int = Field(default=20, ge=1)
    max_connections_per_user: int = Field(default=64, ge=1)
    # Per user over all conversations (and nodes): answers running at once (more wait for one
    # of theirs to end, without holding up anyone else's conversations), and chats accepted
    # but not running yet (past it: queue_full). Not applied with auth.mode = "none".
    max_running_per_user: int = Field(default=4, ge=1)
    max_queued_per_user: int = Field(default=32, ge=0)
    answer_timeout_s: float = Field(default=300.0, gt=0)
    # Yield to other answers after this many pieces in a row (0: never). A backend that never
    # awaits (a cache, a fake) would otherwise starve every other client while it streams.
    yield_every_pieces: int = Field(default=8, ge=0)
    # While a new chat is taken in, an answer that streams without pausing waits at its yield
    # point for up to this long, so the new chat's first frame is not behind every such answer
    # several times over (runner/intake.py). 0: no priority.
    intake_priority_ms: float = Field(default=50.0, ge=0, le=1000)


class ClusterSettings(Section):
    """Timing of the leases under which nodes run conversations (several nodes only)."""

    # A node that stops renewing (killed, partitioned) loses its conversations this long after
    # its last renewal; its running answer is then ended as failed by another node.
    lease_s: float = Field(default=10.0, gt=0)
    renew_s: float = Field(default=2.0, gt=0)  # how often a node renews the leases it holds
    reap_s: float = Field(default=1.0, gt=0)  # how often each node looks for expired leases

    @model_validator(mode="after")
    def _renew_within_lease(self) -> ClusterSettings:
        # One late or failed renewal must not cost a live node its lease.
        if self.renew_s * 2 > self.lease_s:
            raise ValueError(
                f"cluster.renew_s ({self.renew_s}) must be at most half of cluster.lease_s "
                f"({self.lease_s}), so that a lease outlives one missed renewal"
            )
        return self


def _http_url(value: str) -> str:
    if not value.startswith(("https://", "http://")) or len(value) > 2048:
        raise ValueError("must be an http(s) URL")
    return value


class OidcSettings(Section):
    """A provider the browser UI signs in with (``[auth.oidc]``): the authorization code flow
    with PKCE, as a public client (no secret: the page is public). The page exchanges the code
    at the token endpoint itself, so that endpoint must allow this site's origin (CORS), and
    the token it returns must be one dari accepts (``auth.issuer``, ``auth.audience``, keys)."""

    name: str = Field(default="", max_length=80)  # on the button; the issuer's host when empty
    issuer: str | None = None
    authorization_endpoint: str
    token_endpoint: str
    client_id: str = Field(min_length=1, max_length=512)
    scopes: list[str] = Field(default_factory=lambda: ["openid"])
    redirect_path: str = "/"  # where the provider sends the browser back (the UI's page)
    token: Literal["access_token", "id_token"] = "access_token"  # which one dari verifies
    # Added to the authorization request, e.g. {audience = "dari"} for providers that need it.
    extra_params: dict[str, str] = Field(default_factory=dict)

    _urls = field_validator("authorization_endpoint", "token_endpoint")(_http_url)

    @field_validator("redirect_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or value.startswith("//"):
            raise ValueError("redirect_path must be a path on this site, starting with one /")
        return value

    def public(self) -> dict[str, Any]:
        """What GET /api/config tells the page (nothing here is secret)."""
        return self.model_dump()


class AuthSettings(Section):
    mode: Literal["none", "jwt"] = "none"
    algorithms: list[str] = Field(default_factory=lambda: ["HS256"])
    secret: str | None = None  # for HS256
    public_key_file: Path | None = None  # for RS256/ES256
    jwks_file: Path | None = None
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = Field(default=10.0, ge=0)
    max_token_bytes: int = Field(default=8192, ge=256)
    projects_claim: str = "projects"
    agents_claim: str = "agents"
    admin_claim: str = "admin"
    allowed_origins: list[str] = Field(default_factory=list)
    cookie_name: str = "dari_session"
    cookie_secure: bool = False
    oidc: OidcSettings | None = None  # sign in from the browser with a provider (jwt mode)


_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "dari_config_file", default=None
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        hide_input_in_errors=True,
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    heartbeat_s: float = Field(default=20.0, gt=0)
    # Unset: unique per process (host name, pid, random suffix); see effective_node_id.
    node_id: str | None = Field(default=None, min_length=1, max_length=200)
    default_project: str = "project_001"
    default_agent: str = "집사"
    projects: list[ProjectConfig] = Field(default_factory=default_projects)
    _default_node_id: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _unique_projects(self) -> Settings:
        ids = [project.id for project in self.projects]
        if len(ids) != len(set(ids)):
            raise ValueError("a project id is declared twice")
        return self

    @model_validator(mode="after")
    def _cluster_needs_a_redis_bus(self) -> Settings:
        # Without a shared bus, nodes sharing Redis logs cannot wake or cancel each other:
        # answers would reach only the sockets of the node that ran them.
        if self.replay.url != "memory://" and self.bus.url == "memory://":
            raise ValueError(
                "replay.url is Redis but bus.url is memory://: several nodes need "
                "bus.url = redis://… as well (the same Redis is fine)"
            )
        if self.bus.url != "memory://" and self.replay.url == "memory://":
            raise ValueError(
                "bus.url is Redis but replay.url is memory://: several nodes need "
                "replay.url = redis://… as well (the same Redis is fine)"
            )
        return self

    def model_post_init(self, context: Any, /) -> None:
        # One id per process and Settings, unique even among replicas bound to the same
        # host:port (every pod of a deployment): nodes tell their own bus messages and leases
        # from each other's by it.
        host = socket.gethostname()[:120] or "dari"
        self._default_node_id = f"{host}-{os.getpid()}-{secrets.token_hex(4)}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Read settings from ``config_file`` (TOML), the environment and ``overrides``."""
        if config_file is not None and not config_file.is_file():
            raise FileNotFoundError(f"config file not found: {config_file}")
        _refuse_unknown_env(os.environ, config_file, overrides)
        token = _config_file.set(config_file)
        try:
            return cls(**overrides)
        finally:
            _config_file.reset(token)

    @property
    def effective_node_id(self) -> str:
        return self.node_id or self._default_node_id

    @property
    def clustered(self) -> bool:
        """Several nodes share clients through Redis (one node keeps everything in memory)."""
        return self.bus.url != "memory://"


class UnknownSettingError(ValueError):
    """A ``DARI_*`` environment variable that names no setting."""


def unknown_env_settings(environ: Mapping[str, str]) -> list[str]:
    """One message per ``DARI_*`` variable that names no setting (nested keys with ``__``)."""
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and not upper.startswith(NOT_SETTINGS_PREFIXES):
            problem = _env_problem(name)
            if problem is not None:
                problems.append(problem)
    return problems


def _env_problem(name: str) -> str | None:
    # The environment source matches names case-insensitively; so does this walk.
    keys = name[len(ENV_PREFIX) :].lower().split("__")
    model: type[BaseModel] = Settings
    for depth, key in enumerate(keys):
        fields = model.model_fields
        if key not in fields:
            where = ".".join(keys[:depth]) or "the top level"
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {'.'.join([*keys[:depth], close[0]])}?" if close else ""
            return f"{name}: {where} has no setting {key!r}{hint}"
        annotation = fields[key].annotation
        inner = _section_of(annotation)
        if inner is None:
            # A value (a list or table as JSON): only a table's own keys may follow it.
            if depth + 1 < len(keys) and get_origin(annotation) is not dict:
                return f"{name}: {'.'.join(keys[: depth + 1])} has no keys under it"
            return None
        model = inner
    return None


def _section_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):  # `Section | None`
        for arg in get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def _refuse_unknown_env(
    environ: Mapping[str, str], config_file: Path | None, overrides: Mapping[str, Any]
) -> None:
    problems = unknown_env_settings(environ)
    if not problems:
        return
    # An agent may keep its API key in a DARI_* variable of its own choosing.
    named = set(_key_env_names(overrides))
    if config_file is not None:
        named.update(_key_env_names(tomllib.loads(config_file.read_text(encoding="utf-8"))))
    problems = [p for p in problems if p.split(":", 1)[0] not in named]
    if problems:
        raise UnknownSettingError("unknown setting(s) in the environment: " + "; ".join(problems))


def _key_env_names(value: Any) -> Iterator[str]:
    """Every ``api_key_env`` named anywhere in ``value`` (agents' options)."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "api_key_env" and isinstance(item, str):
                yield item
            else:
                yield from _key_env_names(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _key_env_names(item)
