"""``python -m dari.stores.migrations <alembic command>``: Alembic on dari's store, no ini file.

The database is ``store.url`` from the usual settings (``DARI_STORE__URL`` or ``--config``-less
defaults), e.g. ``DARI_STORE__URL=postgresql+asyncpg://… python -m dari.stores.migrations current``.
"""

from __future__ import annotations

import sys

from alembic.config import CommandLine

from dari.settings import Settings
from dari.stores.migrations import make_config


def main(argv: list[str] | None = None) -> int:
    cli = CommandLine(prog="python -m dari.stores.migrations")
    options = cli.parser.parse_args(argv)
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    cli.run_cmd(make_config(url=Settings.load().store.url), options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
