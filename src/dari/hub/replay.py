"""The replay log: every frame meant for a client, numbered by ``seq``, kept for a while.

The log is also the client's outbound queue: the socket's writer reads from it. While the
writer is behind (or no socket is attached), a new ``response`` piece of the same request is
merged into the newest entry, as long as nothing has read that entry yet. So an absent or slow
client gets fewer, larger frames, ``seq`` stays contiguous, and nothing already sent changes.

The memory log is bounded by frames, age and bytes: each frame's size is estimated once, when
it is appended (``frame_bytes``). Past ``max_client_bytes`` a client's oldest frames go; past
``max_total_bytes`` the oldest frames of clients with no socket attached go first, then those
of attached clients. A log whose client has no socket and whose frames all expired is dropped
by ``sweep`` (run by the janitor), so a client that left costs nothing after the replay window.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from dari.metrics import COALESCED
from dari.protocol.frames import Frame
from dari.protocol.resume import LogPosition

# What a frame costs in memory besides its text: the dict, its seq, the log's bookkeeping
# (measured: about 280 bytes for a response piece of ten characters).
FRAME_OVERHEAD = 256
_ITEM_OVERHEAD = 64  # each nested message, step or item (a dict of its own)


def frame_bytes(frame: Frame) -> int:
    """The estimated memory of a logged frame: its strings' lengths plus fixed overheads.

    Cheap on the hot path (an answer's pieces: one ``len``); nested lists and dicts (a
    ``history`` reply's messages, steps, listing items) are walked once, at append.
    """
    if frame.get("type") in ("response", "reasoning"):
        content = frame.get("content")
        return FRAME_OVERHEAD + (len(content) if isinstance(content, str) else 0)
    return FRAME_OVERHEAD + _value_bytes(frame)


def _value_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        # A loop, not sum() over a generator: most frames (ack, start, end) are flat dicts of
        # strings, counted here without a call per value.
        total = _ITEM_OVERHEAD
        for item in value.values():
            total += len(item) if item.__class__ is str else _value_bytes(item)
        return total
    if isinstance(value, list | tuple):
        return sum(_value_bytes(item) + 8 for item in value)
    return 8


def _never(client_id: str) -> bool:
    return False


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

    Parallel deques rather than one of entry objects: a frame (a dict of strings and ints),
    a float and an int are not tracked by the cyclic garbage collector, while an entry object
    or a tuple holding a dict always is. With up to 10,000 frames kept per client, entries
    would make every full collection walk millions of objects (pauses of a second and more).
    """

    __slots__ = (
        "bytes",
        "frames",
        "head",
        "keys",
        "last_at",
        "logged_at",
        "sealed",
        "sizes",
        "tail_parts",
    )

    def __init__(self) -> None:
        self.frames: deque[Frame] = deque()
        self.logged_at: deque[float] = deque()
        self.keys: deque[str | None] = deque()  # merge keys
        self.sizes: deque[int] = deque()  # each frame's estimated bytes (frame_bytes)
        self.bytes = 0  # their sum
        self.last_at = 0.0  # when the newest frame was appended (or merged into)
        self.head = 0
        self.sealed = 0  # highest seq handed to a reader; frames up to it never change
        # Pieces merged into the newest frame, joined into its content when it is read or
        # when another frame follows it.
        self.tail_parts: list[str] | None = None

    @property
    def first_seq(self) -> int:
        return self.head - len(self.frames) + 1

    def drop_oldest(self) -> int:
        """Drop the oldest frame; returns its estimated bytes."""
        self.frames.popleft()
        self.logged_at.popleft()
        self.keys.popleft()
        size = self.sizes.popleft()
        self.bytes -= size
        if not self.frames:
            self.tail_parts = None
        return size

    def seal_tail(self) -> None:
        if self.tail_parts is not None:
            self.frames[-1]["content"] = "".join(self.tail_parts)
            self.tail_parts = None


class MemoryReplayLog(ReplayLog):
    def __init__(
        self,
        max_frames: int = 10_000,
        max_age_s: float = 600.0,
        max_client_bytes: int = 16 * 1024 * 1024,
        max_total_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.epoch = uuid.uuid4().hex[:12]
        self.max_frames = max_frames
        self.max_age_s = max_age_s
        self.max_client_bytes = max_client_bytes
        self.max_total_bytes = max_total_bytes
        # Eviction brings the total down to this, so that it does not run on every append.
        self._total_low_water = max_total_bytes * 7 // 8
        self.total_bytes = 0  # estimated bytes of every frame kept
        # Whether a socket of the client is attached (set by the delivery): clients without
        # one lose frames first when the total budget is exceeded.
        self.attached: Callable[[str], bool] = _never
        self._logs: dict[str, _ClientLog] = {}

    def immediate(self) -> MemoryReplayLog:
        return self

    def _drop(self, log: _ClientLog) -> None:
        self.total_bytes -= log.drop_oldest()

    def _trim(self, log: _ClientLog, now: float) -> None:
        while len(log.frames) > self.max_frames:
            self._drop(log)
        horizon = now - self.max_age_s
        logged_at = log.logged_at
        while logged_at and logged_at[0] < horizon:
            self._drop(log)
        self._trim_bytes(log)

    def _trim_bytes(self, log: _ClientLog) -> None:
        # The newest frame stays whatever its size: it is what the client has not read yet.
        while log.bytes > self.max_client_bytes and len(log.frames) > 1:
            self._drop(log)

    def _evict(self, keep: _ClientLog) -> None:
        """Past the total budget: drop the oldest frames of clients with no socket attached
        (least recently active first), then, if that is not enough, the oldest frames of the
        others. ``keep`` (the log just appended to) keeps its newest frame."""
        low = self._total_low_water
        absent: list[_ClientLog] = []
        present: list[_ClientLog] = []
        for client_id, log in self._logs.items():
            if log.frames:
                (present if self.attached(client_id) else absent).append(log)
        absent.sort(key=lambda log: log.last_at)
        present.sort(key=lambda log: log.logged_at[0])
        for log in absent + present:
            floor = 1 if log is keep else 0
            while self.total_bytes > low and len(log.frames) > floor:
                self._drop(log)
            if self.total_bytes <= low:
                return

    async def append(self, client_id: str, frame: Frame, merge_key: str | None = None) -> int:
        return self.append_now(client_id, frame, merge_key)

    def append_now(self, client_id: str, frame: Frame, merge_key: str | None = None) -> int:
        """Synchronous append: the memory log never waits, which keeps fan-out atomic."""
        log = self._logs.get(client_id)
        if log is None:
            log = self._logs[client_id] = _ClientLog()
        frames = log.frames
        now = time.monotonic()
        log.last_at = now
        if merge_key is not None and frames and log.keys[-1] == merge_key and log.head > log.sealed:
            content = frame["content"]
            if log.tail_parts is None:
                log.tail_parts = [frames[-1]["content"]]
            log.tail_parts.append(content)
            log.sizes[-1] += len(content)
            log.bytes += len(content)
            self.total_bytes += len(content)
            COALESCED.inc()
            if log.bytes > self.max_client_bytes:
                self._trim_bytes(log)
            if self.total_bytes > self.max_total_bytes:
                self._evict(log)
            return log.head
        log.seal_tail()
        log.head += 1
        frame["seq"] = log.head
        size = frame_bytes(frame)
        frames.append(frame)
        log.logged_at.append(now)
        log.keys.append(merge_key)
        log.sizes.append(size)
        log.bytes += size
        self.total_bytes += size
        if (
            len(frames) > self.max_frames
            or log.logged_at[0] < now - self.max_age_s
            or log.bytes > self.max_client_bytes
        ):
            self._trim(log, now)
        if self.total_bytes > self.max_total_bytes:
            self._evict(log)
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
        log = self._logs.pop(client_id, None)
        if log is not None:
            self.total_bytes -= log.bytes

    def sweep(self) -> int:
        """Trim every log by age; drop the logs of clients with no socket attached whose
        frames have all expired (a client that left costs nothing after the replay window).
        Returns how many logs were dropped. Run periodically (the gateway's janitor)."""
        now = time.monotonic()
        horizon = now - self.max_age_s
        gone = []
        for client_id, log in self._logs.items():
            self._trim(log, now)
            if not log.frames and log.last_at < horizon and not self.attached(client_id):
                gone.append(client_id)
        for client_id in gone:
            log = self._logs.pop(client_id)
            self.total_bytes -= log.bytes
        return len(gone)

    def client_bytes(self, client_id: str) -> int:
        """The estimated bytes of the client's kept frames (0 without a log)."""
        log = self._logs.get(client_id)
        return 0 if log is None else log.bytes

    def __contains__(self, client_id: str) -> bool:
        return client_id in self._logs
