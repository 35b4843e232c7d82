"""The replay log: every frame meant for a client, numbered by ``seq``, kept for a while.

The log is also the client's outbound queue: the socket's writer reads from it. While the
writer is behind (or no socket is attached), a new ``response`` piece of the same request is
merged into the newest entry, as long as nothing has read that entry yet. So an absent or slow
client gets fewer, larger frames, ``seq`` stays contiguous, and nothing already sent changes.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field

from dari.metrics import COALESCED
from dari.protocol.frames import Frame
from dari.protocol.resume import LogPosition


class ReplayLog(ABC):
    """Per-client numbered frames. Implementations: memory (one node), Redis Streams (several)."""

    epoch: str

    @abstractmethod
    async def append(self, client_id: str, frame: Frame, merge_key: str | None = None) -> int:
        """Number ``frame`` (sets ``frame["seq"]``), keep it, return its seq.

        With ``merge_key``, the frame's ``content`` may be merged into the newest entry instead
        when that entry has the same key and has not been read yet.
        """

    @abstractmethod
    async def read(self, client_id: str, after: int, limit: int) -> list[Frame] | None:
        """Frames with seq > ``after``, oldest first, at most ``limit``.

        Returns ``None`` when the log no longer holds seq ``after + 1``. Frames returned are
        final: they are never merged into afterwards.
        """

    @abstractmethod
    async def position(self, client_id: str) -> LogPosition: ...

    @abstractmethod
    async def forget(self, client_id: str) -> None: ...


@dataclass(slots=True)
class _Entry:
    seq: int
    frame: Frame
    at: float
    merge_key: str | None
    parts: list[str] | None = None  # merged pieces, joined when the entry is first read

    def seal(self) -> Frame:
        if self.parts is not None:
            self.frame["content"] = "".join(self.parts)
            self.parts = None
        self.merge_key = None
        return self.frame


@dataclass(slots=True)
class _ClientLog:
    entries: deque[_Entry] = field(default_factory=deque)
    head: int = 0
    sealed: int = 0  # highest seq handed to a reader; entries up to it never change


class MemoryReplayLog(ReplayLog):
    def __init__(self, max_frames: int = 10_000, max_age_s: float = 600.0) -> None:
        self.epoch = uuid.uuid4().hex[:12]
        self.max_frames = max_frames
        self.max_age_s = max_age_s
        self._logs: dict[str, _ClientLog] = {}

    def _trim(self, log: _ClientLog, now: float) -> None:
        entries = log.entries
        while len(entries) > self.max_frames:
            entries.popleft()
        horizon = now - self.max_age_s
        while entries and entries[0].at < horizon:
            entries.popleft()

    async def append(self, client_id: str, frame: Frame, merge_key: str | None = None) -> int:
        return self.append_now(client_id, frame, merge_key)

    def append_now(self, client_id: str, frame: Frame, merge_key: str | None = None) -> int:
        """Synchronous append: the memory log never waits, which keeps fan-out atomic."""
        log = self._logs.get(client_id)
        if log is None:
            log = self._logs[client_id] = _ClientLog()
        entries = log.entries
        if merge_key is not None and entries:
            tail = entries[-1]
            if tail.merge_key == merge_key and tail.seq > log.sealed:
                if tail.parts is None:
                    tail.parts = [tail.frame["content"]]
                tail.parts.append(frame["content"])
                COALESCED.inc()
                return tail.seq
        log.head += 1
        frame["seq"] = log.head
        now = time.monotonic()
        entries.append(_Entry(log.head, frame, now, merge_key))
        if len(entries) > self.max_frames or entries[0].at < now - self.max_age_s:
            self._trim(log, now)
        return log.head

    async def read(self, client_id: str, after: int, limit: int) -> list[Frame] | None:
        return self.read_now(client_id, after, limit)

    def read_now(self, client_id: str, after: int, limit: int) -> list[Frame] | None:
        """Synchronous ``read``: lets a writer send without a task switch per frame."""
        log = self._logs.get(client_id)
        if log is None:
            return [] if after == 0 else None
        self._trim(log, time.monotonic())
        entries = log.entries
        if after >= log.head:
            return []
        first = entries[0].seq if entries else log.head + 1
        if after + 1 < first:
            return None
        start = after + 1 - first  # entries are contiguous by seq
        stop = min(len(entries), start + limit)
        frames = [entries[i].seal() for i in range(start, stop)]
        if frames:
            log.sealed = max(log.sealed, frames[-1]["seq"])
        return frames

    async def position(self, client_id: str) -> LogPosition:
        return self.position_now(client_id)

    def position_now(self, client_id: str) -> LogPosition:
        log = self._logs.get(client_id)
        if log is None:
            return LogPosition(exists=False, epoch=self.epoch, first_seq=1, head=0)
        self._trim(log, time.monotonic())
        first = log.entries[0].seq if log.entries else log.head + 1
        return LogPosition(exists=True, epoch=self.epoch, first_seq=first, head=log.head)

    def head_now(self, client_id: str) -> int:
        """The newest seq logged for ``client_id`` (0 if none): the writer's per-batch check."""
        log = self._logs.get(client_id)
        return 0 if log is None else log.head

    async def forget(self, client_id: str) -> None:
        self._logs.pop(client_id, None)
