"""Client-side bookkeeping of ``seq``: drop what was seen, detect gaps.

Used by the Python client; the JavaScript client follows the same rule.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class Verdict(Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    GAP = "gap"


class SeqTracker:
    def __init__(self) -> None:
        self.position: int | None = None
        self.epoch: str | None = None

    def observe(self, frame: dict[str, Any]) -> Verdict:
        seq = frame.get("seq")
        if frame.get("type") == "welcome":
            # welcome does not advance seq: it says where this connection continues from.
            self.position = int(seq) if isinstance(seq, int) else 0
            epoch = frame.get("epoch")
            self.epoch = epoch if isinstance(epoch, str) else None
            return Verdict.NEW
        if not isinstance(seq, int) or self.position is None:
            return Verdict.NEW
        if seq <= self.position:
            return Verdict.DUPLICATE
        if seq != self.position + 1:
            return Verdict.GAP
        self.position = seq
        return Verdict.NEW
