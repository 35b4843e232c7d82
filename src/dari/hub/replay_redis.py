"""The replay log in Redis Streams: one stream per client, shared by every node.

Keys (``prefix`` defaults to ``dari:``):

- ``<prefix>replay:epoch`` — the log's lifetime. Made with SET NX by whichever node needs it
  first; it has no TTL, so it disappears only when Redis loses its data (restart without
  persistence, FLUSHALL, failover to an empty replica). A new epoch makes every reconnecting
  client ``resumed: false`` (``epoch_changed``) instead of replaying frames that were never its.
- ``<prefix>replay:<client_id>:seq`` — the client's last seq (INCR). Seq numbering is shared
  by all nodes, so a client resuming on another node continues at +1.
- ``<prefix>replay:<client_id>:log`` — the stream. Entry ids are ``<seq>-0``, so reading
  "after N" is ``XRANGE (N+1)-0 +``. Each entry holds ``t`` (Redis time, ms), ``f`` (the
  frame as JSON, without ``seq``: the id carries it) and ``c``: the bytes logged for the client
  before this entry (the previous entry's ``c`` plus its size, ``#f`` + 64), so the bytes the
  stream holds are the newest entry's end minus the oldest entry's ``c``.

Every operation is one Lua script, so numbering, appending and trimming are atomic across nodes.
Trimming: by count with ``MAXLEN`` (exact) on every append; by age with ``XTRIM MINID`` at the
first entry younger than ``max_age_s`` (found by binary search over the contiguous seqs), on
every read and position and on every 32nd append of a client (seq divisible by 32: checked on
every append, a long-lived client's stream would be searched on every frame once its oldest
entries age out; in between, at most 31 appends' worth of stale entries wait, never served);
by bytes, on every append past the client's first ``max_client_bytes``, at the first entry whose
``c`` is within ``max_client_bytes`` of the newest entry's end (the same search; the newest
entry stays whatever its size). Both keys also expire: the stream ``max_age_s`` after the last
append (all of it is too old by then), the counter ``idle_ttl_s`` after the last use. The total
over all clients is not bounded here: it is at most ``max_client_bytes`` per client whose log
was appended to within ``max_age_s``; size Redis's ``maxmemory`` for it (docs/deployment.md).

Unlike the memory log, this log never merges ``response`` pieces into an unread entry
(``merge_key`` is ignored): another node may be reading the tail at any moment, so "not read
yet" is not knowable without a round trip. Coalescing under back-pressure is a memory-log
feature; with Redis a slow client receives every piece as its own frame.

Redis Cluster is not supported (a script touches the epoch key and the client's keys, which
live in different slots); use one Redis, with Sentinel for failover if needed.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from dari.buses.redis import redis_client
from dari.hub.replay import ReplayLog
from dari.protocol.errors import StoreUnavailable
from dari.protocol.frames import Frame
from dari.protocol.resume import LogPosition

# Shared by the scripts: the epoch (made if missing), Redis's clock, and age trimming.
LUA_PRELUDE = """
local function epoch()
  local current = redis.call('GET', KEYS[1])
  if current then return current end
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function id(seq) return string.format('%d-0', seq) end

local function seq_of(entry_id) return tonumber(string.match(entry_id, '^(%d+)')) end

-- An entry's fields: t, <ms>, f, <frame>, c, <bytes logged before it> (0 if older than c).
local ENTRY_OVERHEAD = 64
local function logged_at(fields) return tonumber(fields[2]) end
local function start_of(fields) return tonumber(fields[6]) or 0 end

-- The lowest seq in lo..hi whose entry passes keep (false below, true from there on), or
-- hi + 1 when none does. Entries are contiguous by seq.
local function first_kept(stream, lo, hi, keep)
  while lo <= hi do
    local mid = math.floor((lo + hi) / 2)
    local entry = redis.call('XRANGE', stream, id(mid), id(mid))
    if #entry > 0 and keep(entry[1][2]) then hi = mid - 1 else lo = mid + 1 end
  end
  return lo
end

-- Drop entries older than horizon (ms, nil: not now) from the front and, with floor, those that
-- start below floor bytes (never the newest); return the first seq still held (head + 1 when
-- none).
local function trim(stream, head, horizon, floor)
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #first == 0 then return head + 1 end
  local lo = seq_of(first[1][1])
  local kept = lo
  if horizon and logged_at(first[1][2]) < horizon then
    kept = first_kept(stream, lo + 1, head, function(f) return logged_at(f) >= horizon end)
  end
  if floor and kept < head and (kept > lo or start_of(first[1][2]) < floor) then
    local by_bytes = first_kept(stream, kept, head, function(f) return start_of(f) >= floor end)
    kept = math.max(kept, math.min(by_bytes, head))
  end
  if kept > lo then redis.call('XTRIM', stream, 'MINID', id(kept)) end
  return kept
end

local function trim_age(stream, head, horizon) return trim(stream, head, horizon, nil) end

local AGE_TRIM_EVERY = 32  -- appends per client between age checks (see the module's notes)

-- Number a frame (JSON without seq) and keep it in a client's log; returns its seq.
local function log_append(counter, stream, frame, now, max_frames, max_age_ms, counter_ttl_ms,
    max_bytes)
  local seq = redis.call('INCR', counter)
  local start = 0
  local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #newest > 0 then
    start = start_of(newest[1][2]) + #newest[1][2][4] + ENTRY_OVERHEAD
  end
  redis.call('XADD', stream, 'MAXLEN', max_frames, id(seq), 't', now, 'f', frame, 'c', start)
  local floor = start + #frame + ENTRY_OVERHEAD - tonumber(max_bytes)
  local horizon = nil
  if seq % AGE_TRIM_EVERY == 0 then horizon = now - tonumber(max_age_ms) end
  if horizon or floor > 0 then trim(stream, seq, horizon, floor > 0 and floor or nil) end
  redis.call('PEXPIRE', stream, max_age_ms)
  redis.call('PEXPIRE', counter, counter_ttl_ms)
  return seq
end
"""

# KEYS: epoch, counter, stream. ARGV: epoch candidate, frame JSON, max frames, max age ms,
# counter TTL ms, max bytes. Returns {seq, epoch}.
_APPEND = (
    LUA_PRELUDE
    + """
local current = epoch()
local seq = log_append(KEYS[2], KEYS[3], ARGV[2], now_ms(), ARGV[3], ARGV[4], ARGV[5], ARGV[6])
return {seq, current}
"""
)

# KEYS: epoch, counter, stream. ARGV: epoch candidate, after, limit, max age ms, counter TTL ms.
# Returns {epoch, head (-1: no log), first seq held, entries after `after` (at most limit)}.
_READ = (
    LUA_PRELUDE
    + """
local current = epoch()
local head = redis.call('GET', KEYS[2])
if not head then return {current, -1, 1, {}} end
head = tonumber(head)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local first = trim_age(KEYS[3], head, now_ms() - tonumber(ARGV[4]))
local after, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
if limit == 0 or after >= head or after + 1 < first then return {current, head, first, {}} end
return {current, head, first, redis.call('XRANGE', KEYS[3], id(after + 1), '+', 'COUNT', limit)}
"""
)


class ReplayUnavailable(StoreUnavailable):
    """Redis cannot be reached: the frame was not logged, or the log not read."""


def _candidate() -> str:
    # A fresh one per call: after a data loss, whichever node notices first names the new epoch.
    return os.urandom(6).hex()


class RedisReplayLog(ReplayLog):
    def __init__(
        self,
        url: str,
        max_frames: int = 10_000,
        max_age_s: float = 600.0,
        *,
        max_client_bytes: int = 16 * 1024 * 1024,
        idle_ttl_s: float = 7 * 24 * 3600.0,
        prefix: str = "dari:",
        name: str = "dari-replay",
    ) -> None:
        self.url = url
        self.max_frames = max_frames
        self.max_client_bytes = max_client_bytes
        self.max_age_ms = max(1, int(max_age_s * 1000))
        # The counter outlives the stream: numbering must never restart under a live client.
        self.counter_ttl_ms = max(self.max_age_ms, int(idle_ttl_s * 1000))
        self.prefix = prefix
        self.epoch = ""  # known after start(); follows Redis's if Redis loses its data
        self._redis = redis_client(url, name)
        self._append = self._redis.register_script(_APPEND)
        self._read = self._redis.register_script(_READ)
        self.epoch_key = f"{prefix}replay:epoch"
        # The epoch each client's reader started in, on this node: a read in another epoch
        # returns None, so a socket attached before Redis lost its data reconnects.
        self._client_epochs: dict[str, str] = {}

    @property
    def redis(self) -> Redis:
        """The client this log uses (shared state of a cluster lives in the same Redis)."""
        return self._redis

    @property
    def log_prefix(self) -> str:
        """Every client's keys start with this, then ``<client_id>:seq`` / ``<client_id>:log``."""
        return f"{self.prefix}replay:"

    def log_keys(self, client_id: str) -> tuple[str, str]:
        """The client's counter and stream keys."""
        base = f"{self.log_prefix}{client_id}"
        return f"{base}:seq", f"{base}:log"

    def _keys(self, client_id: str) -> list[str]:
        base = f"{self.prefix}replay:{client_id}"
        return [self.epoch_key, f"{base}:seq", f"{base}:log"]

    async def start(self) -> None:
        """Learn the epoch (making it if this is the first node). Raises if Redis is down."""
        await self.ping()

    async def ping(self) -> None:
        """Raise ``ReplayUnavailable`` unless Redis answers; refresh the epoch."""
        try:
            await self._redis.set(self.epoch_key, _candidate(), nx=True)
            value = await self._redis.get(self.epoch_key)
        except (RedisError, OSError) as exc:
            raise ReplayUnavailable(f"replay log unreachable: {exc}") from exc
        if value is not None:
            self.epoch = value.decode() if isinstance(value, bytes) else value

    async def close(self) -> None:
        await self._redis.aclose()

    async def _run(self, script: Any, client_id: str, *args: Any) -> Any:
        try:
            return await script(keys=self._keys(client_id), args=[_candidate(), *args])
        except (RedisError, OSError) as exc:
            raise ReplayUnavailable(f"replay log unreachable: {exc}") from exc

    async def append(self, client_id: str, frame: Frame, merge_key: str | None = None) -> int:
        body = frame if "seq" not in frame else {k: v for k, v in frame.items() if k != "seq"}
        seq, epoch = await self._run(
            self._append,
            client_id,
            orjson.dumps(body),
            self.max_frames,
            self.max_age_ms,
            self.counter_ttl_ms,
            self.max_client_bytes,
        )
        self.epoch = epoch.decode()
        frame["seq"] = int(seq)
        return int(seq)

    async def _query(
        self, client_id: str, after: int, limit: int
    ) -> tuple[str, int, int, list[Any]]:
        epoch, head, first, entries = await self._run(
            self._read, client_id, after, limit, self.max_age_ms, self.counter_ttl_ms
        )
        self.epoch = epoch.decode()
        return self.epoch, int(head), int(first), entries

    async def read(self, client_id: str, after: int, limit: int) -> list[Frame] | None:
        epoch, head, first, entries = await self._query(client_id, after, limit)
        started_in = self._client_epochs.setdefault(client_id, epoch)
        if started_in != epoch:
            del self._client_epochs[client_id]  # the reconnection starts in the new epoch
            return None
        if head < 0:
            return [] if after == 0 else None
        if after > head:
            # A position past the head belongs to numbering that is gone (the counter was lost
            # with its keys): never let new frames with the same numbers pass for the old ones.
            return None
        if after + 1 < first:
            return None
        frames: list[Frame] = []
        for entry_id, fields in entries:
            frame: Frame = orjson.loads(fields[3])  # fields: t, <ms>, f, <json>
            frame["seq"] = int(entry_id.split(b"-", 1)[0])
            frames.append(frame)
        return frames

    def reading_epoch(self, client_id: str) -> str | None:
        """The epoch this node's writer for ``client_id`` reads in (None before it started)."""
        return self._client_epochs.get(client_id)

    async def position(self, client_id: str) -> LogPosition:
        epoch, head, first, _ = await self._query(client_id, 0, 0)
        # A new socket starts from here, in this epoch. (A writer also asks after each batch;
        # for that to hide a loss, Redis would have to lose its data and number past the
        # writer's position within one round trip.)
        self._client_epochs[client_id] = epoch
        if head < 0:
            return LogPosition(exists=False, epoch=epoch, first_seq=1, head=0)
        return LogPosition(exists=True, epoch=epoch, first_seq=first, head=head)

    async def forget(self, client_id: str) -> None:
        self._client_epochs.pop(client_id, None)
        _, counter, stream = self._keys(client_id)
        try:
            await self._redis.delete(counter, stream)
        except (RedisError, OSError) as exc:
            raise ReplayUnavailable(f"replay log unreachable: {exc}") from exc
