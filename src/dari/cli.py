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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dari", description="Real-time gateway to AI agents.")
    parser.add_argument("--version", action="version", version=f"dari {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", type=Path, default=None, help="TOML settings file")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.set_defaults(run=_serve)

    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
