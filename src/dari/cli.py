"""The ``dari`` command: serve | chat | token."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from dari import __version__


def _serve(args: argparse.Namespace) -> int:
    from dari.app.gateway import ConfigError
    from dari.app.server import serve
    from dari.settings import Settings

    overrides: dict[str, object] = {}
    server: dict[str, object] = {}
    if args.host is not None:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    try:
        settings = Settings.load(args.config)
        if server:
            settings = settings.model_copy(
                update={"server": settings.server.model_copy(update=server)}
            )
            settings = Settings.model_validate(settings.model_dump())
        del overrides
        serve(settings)
    except (ValidationError, ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"dari: cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


def _chat(args: argparse.Namespace) -> int:
    import asyncio
    import uuid

    from dari.client.terminal import run_terminal

    client_id = args.client_id or f"cli-{uuid.uuid4().hex[:12]}"
    return asyncio.run(
        run_terminal(args.url, client_id, args.project, args.agent, args.thread, args.token)
    )


def _token(args: argparse.Namespace) -> int:
    from dari.auth.tokens import mint_token
    from dari.settings import Settings

    try:
        settings = Settings.load(args.config)
        token = mint_token(
            settings.auth,
            sub=args.sub,
            projects=[p for p in args.projects.split(",") if p],
            agents=[a for a in (args.agents or "").split(",") if a],
            admin=args.admin,
            ttl_s=args.ttl,
            private_key_file=args.private_key,
        )
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        print(f"dari: cannot mint a token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dari", description="Real-time gateway to AI agents.")
    parser.add_argument("--version", action="version", version=f"dari {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", type=Path, default=None, help="TOML settings file")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.set_defaults(run=_serve)

    chat = commands.add_parser("chat", help="chat with an agent in the terminal")
    chat.add_argument("--url", default="ws://127.0.0.1:8000", help="gateway address")
    chat.add_argument("--project", default="project_001")
    chat.add_argument("--agent", default="집사")
    chat.add_argument("--thread", default="main")
    chat.add_argument("--client-id", default=None, help="reuse an id to resume a session")
    chat.add_argument("--token", default=None, help="JWT when the gateway has auth on")
    chat.set_defaults(run=_chat)

    token = commands.add_parser("token", help="mint a development token (auth.mode = jwt)")
    token.add_argument("--config", type=Path, default=None, help="TOML settings file")
    token.add_argument("--sub", required=True, help="the user")
    token.add_argument("--projects", default="*", help="comma-separated project ids, or *")
    token.add_argument("--agents", default=None, help="comma-separated project:agent pairs")
    token.add_argument("--admin", action="store_true", help="may start/stop agents, broadcast")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.add_argument("--private-key", type=Path, default=None, help="PEM key for RS256/ES256")
    token.set_defaults(run=_token)

    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
