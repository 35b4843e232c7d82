"""Deciding, at connect time, whether a client's stream can be resumed.

A client that reconnects sends ``last_seq=N`` (and optionally ``epoch=E``) in the query string.
The log of its client_id either still holds every frame after N (resume: replay N+1..head) or it
does not (a fresh start from the head, with snapshots of answers in progress).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class NotResumedReason(StrEnum):
    INVALID_LAST_SEQ = "invalid_last_seq"
    EPOCH_CHANGED = "epoch_changed"
    NO_LOG = "no_log"
    AHEAD = "ahead"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class LogPosition:
    exists: bool
    epoch: str
    first_seq: int  # oldest seq still held; head + 1 when nothing is held
    head: int  # newest seq assigned; 0 when none


@dataclass(frozen=True, slots=True)
class ResumePlan:
    resumed: bool
    position: int  # frames with seq > position are sent on this connection
    reason: NotResumedReason | None = None


_MAX_SEQ_DIGITS = 18


def parse_last_seq(raw: str | None) -> int | None:
    """``None`` if absent; -1 if present but not a non-negative integer."""
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > _MAX_SEQ_DIGITS:
        return -1
    return int(raw)


def plan_resume(last_seq: str | None, epoch: str | None, log: LogPosition) -> ResumePlan:
    fresh = log.head
    requested = parse_last_seq(last_seq)
    if requested is None:
        return ResumePlan(resumed=False, position=fresh)
    if requested < 0:
        return ResumePlan(False, fresh, NotResumedReason.INVALID_LAST_SEQ)
    if epoch is not None and epoch != log.epoch:
        return ResumePlan(False, fresh, NotResumedReason.EPOCH_CHANGED)
    if not log.exists:
        # Nothing was ever logged for this client: resuming from 0 misses nothing.
        if requested == 0:
            return ResumePlan(resumed=True, position=0)
        return ResumePlan(False, fresh, NotResumedReason.NO_LOG)
    if requested > log.head:
        return ResumePlan(False, fresh, NotResumedReason.AHEAD)
    if requested + 1 < log.first_seq:
        return ResumePlan(False, fresh, NotResumedReason.EXPIRED)
    return ResumePlan(resumed=True, position=requested)
