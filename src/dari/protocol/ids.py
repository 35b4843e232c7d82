"""Identifier rules that are checked before any state is created."""

from __future__ import annotations

import re

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def is_valid_client_id(client_id: str) -> bool:
    return _CLIENT_ID.fullmatch(client_id) is not None
