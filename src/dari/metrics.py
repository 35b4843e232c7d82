"""Prometheus metrics of the gateway (served at /metrics).

Names follow Prometheus conventions: ``_total`` counters, ``_seconds`` histograms.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class HotCounter:
    """A counter for the per-frame hot path: a plain int, read when /metrics is scraped.

    prometheus-client's Counter takes a lock and a label lookup per ``inc``; at tens of
    thousands of frames a second that was several percent of the event loop. These are only
    ever incremented on the event loop thread, so no lock is needed.
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.value = 0
        self._children: dict[tuple[str, ...], HotCounter] = {}
        _HOT.append(self)

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def labels(self, *values: str) -> HotCounter:
        child = self._children.get(values)
        if child is None:
            child = HotCounter.__new__(HotCounter)
            child.value = 0
            self._children[values] = child
        return child

    def family(self) -> CounterMetricFamily:
        if not self.labelnames:
            return CounterMetricFamily(self.name, self.documentation, value=self.value)
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._children.items():
            family.add_metric(list(values), child.value)
        return family


_HOT: list[HotCounter] = []


class _HotCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily]:
        for counter in _HOT:
            yield counter.family()


REGISTRY.register(_HotCollector())

CONNECTIONS_OPEN = Gauge("dari_connections_open", "WebSocket connections open", ["dialect"])
CONNECTIONS = Counter("dari_connections_total", "WebSocket connections accepted", ["dialect"])
FRAMES_IN = Counter("dari_frames_in_total", "Frames received from clients")
BYTES_IN = Counter("dari_bytes_in_total", "Bytes received from clients (frame payloads)")
FRAMES_OUT = HotCounter("dari_frames_out_total", "Frames sent to clients")
BYTES_OUT = HotCounter("dari_bytes_out_total", "Bytes sent to clients (frame payloads)")
TOKENS = HotCounter("dari_tokens_streamed_total", "Answer pieces streamed", ("agent",))
COALESCED = HotCounter(
    "dari_coalesced_pieces_total",
    "Answer pieces merged into an unsent frame (slow or absent client)",
)
QUEUE_DEPTH = Gauge("dari_queue_depth", "Chats waiting or running, over all conversations")
FIRST_TOKEN = Histogram(
    "dari_time_to_first_token_seconds",
    "From an answer's start to its first piece",
    ["agent"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MODEL_TOKENS = Counter(
    "dari_model_tokens_total",
    "Tokens the models reported using (kind: prompt, completion, and reasoning, which is "
    "part of completion)",
    ["project", "agent", "kind"],
)
ANSWER_DURATION = Histogram(
    "dari_answer_duration_seconds",
    "From an answer's start to its end",
    ["agent", "finish_reason"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
FULL_COLLECTION_PAUSE = Histogram(
    "dari_gc_full_collection_seconds",
    "Pauses of the full garbage collections dari scheduled (docs/DESIGN.md, collector)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
REPLAY = Counter("dari_resume_total", "Reconnections that asked to resume", ["result"])
REPLAYED_FRAMES = Counter("dari_replayed_frames_total", "Frames sent again on resume")
ERRORS = Counter("dari_errors_total", "Error frames sent", ["code"])
RATE_LIMITED = Counter("dari_rate_limited_total", "Frames refused by the rate limit")
TASK_FAILURES = Counter(
    "dari_background_task_failures_total", "Background tasks that ended with an error", ["task"]
)
