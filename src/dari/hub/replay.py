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
from typing import Protocol

from dari.metrics import COALESCED
from dari.protocol.frames import Frame
from dari.protocol.resume import LogPosition


class ImmediateReads(Protocol):
    """Reads that never await: a writer can send from a loop callback (``DirectSocket``)."""

    def read_now(self, client_id: str, after: int, limit: int) -> list[Frame] | None: ...

    def head_now(self, client_id: str) -> int: ...


class ReplayLog(ABC):
    """Per-client numbered frames. Implementations: memory (one node), Redis Streams (several)."""

    epoch: str

    def immediate(self) -> ImmediateReads | None:
        """The log's non-awaiting reads, if it has them (only a log in this process does)."""
        return None

    def reading_epoch(self, client_id: str) -> str | None:
        """The epoch this node's writer for ``client_id`` reads in, where logs can change
        epoch under a running writer (a shared log whose server lost its data)."""
        return None

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


class _ClientLog:
    """One client's frames, oldest first, with seqs ``head - len(frames) + 1 .. head``.

    Three parallel deques rather than one of entry objects: a frame (a dict of strings and
    ints) and a float are not tracked by the cyclic garbage collector, while an entry object
    or a tuple holding a dict always is. With up to 10,000 frames kept per client, entries
    would make every full collection walk millions of objects (pauses of a second and more).
    """

    __slots__ = ("frames", "head", "keys", "logged_at", "sealed", "tail_parts")

    def __init__(self) -> None:
        self.frames: deque[Frame] = deque()
        self.logged_at: deque[float] = deque()
        self.keys: deque[str | None] = deque()  # merge keys
        self.head = 0
        self.sealed = 0  # highest seq handed to a reader; frames up to it never change
        # Pieces merged into the newest frame, joined into its content when it is read or
        # when another frame follows it.
        self.tail_parts: list[str] | None = None

    @property
    def first_seq(self) -> int:
        return self.head - len(self.frames) + 1

    def drop_oldest(self) -> None:
        self.frames.popleft()
        self.logged_at.popleft()
        self.keys.popleft()
        if not self.frames:
            self.tail_parts = None

    def seal_tail(self) -> None:
        if self.tail_parts is not None:
            self.frames[-1]["content"] = "".join(self.tail_parts)
            self.tail_parts = None


class MemoryReplayLog(ReplayLog):
    def __init__(self, max_frames: int = 10_000, max_age_s: float = 600.0) -> None:
        self.epoch = uuid.uuid4().hex[:12]
        self.max_frames = max_frames
        self.max_age_s = max_age_s
        self._logs: dict[str, _ClientLog] = {}

    def immediate(self) -> MemoryReplayLog:
        return self

    def _trim(self, log: _ClientLog, now: float) -> None:
        while len(log.frames) > self.max_frames:
            log.drop_oldest()
        horizon = now - self.max_age_s
        logged_at = log.logged_at
        while logged_at and logged_at[0] < horizon:
            log.drop_oldest()

    async def append(self, client_id: str, frame: Frame, merge_key: str | None = None) -> int:
        return self.append_now(client_id, frame, merge_key)

    def append_now(self, client_id: str, frame: Frame, merge_key: str | None = None) -> int:
        """Synchronous append: the memory log never waits, which keeps fan-out atomic."""
        log = self._logs.get(client_id)
        if log is None:
            log = self._logs[client_id] = _ClientLog()
        frames = log.frames
        if merge_key is not None and frames and log.keys[-1] == merge_key and log.head > log.sealed:
            if log.tail_parts is None:
                log.tail_parts = [frames[-1]["content"]]
            log.tail_parts.append(frame["content"])
            COALESCED.inc()
            return log.head
        log.seal_tail()
        log.head += 1
        frame["seq"] = log.head
        now = time.monotonic()
        frames.append(frame)
        log.logged_at.append(now)
        log.keys.append(merge_key)
        if len(frames) > self.max_frames or log.logged_at[0] < now - self.max_age_s:
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
        if after >= log.head:
            return []
        kept = log.frames
        start = after + 1 - log.first_seq  # frames are contiguous by seq
        if start < 0:
            return None
        stop = min(len(kept), start + limit)
        if stop == len(kept):
            log.seal_tail()  # the newest frame is handed out: no more merging into it
        # Indexing, not islice: a deque reaches an index from its nearer end, and the writer
        # almost always reads the newest frames.
        frames = [kept[i] for i in range(start, stop)]
        if frames:
            log.sealed = max(log.sealed, frames[-1]["seq"])
        return frames

    async def position(self, client_id: str) -> LogPosition:
        log = self._logs.get(client_id)
        if log is None:
            return LogPosition(exists=False, epoch=self.epoch, first_seq=1, head=0)
        self._trim(log, time.monotonic())
        first = log.first_seq
        return LogPosition(exists=True, epoch=self.epoch, first_seq=first, head=log.head)

    def head_now(self, client_id: str) -> int:
        """The newest seq logged for ``client_id`` (0 if none): the writer's per-batch check."""
        log = self._logs.get(client_id)
        return 0 if log is None else log.head

    async def forget(self, client_id: str) -> None:
        self._logs.pop(client_id, None)
