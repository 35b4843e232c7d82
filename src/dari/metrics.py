"""Prometheus metrics of the gateway (served at /metrics).

Names follow Prometheus conventions: ``_total`` counters, ``_seconds`` histograms.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS_OPEN = Gauge("dari_connections_open", "WebSocket connections open", ["dialect"])
CONNECTIONS = Counter("dari_connections_total", "WebSocket connections accepted", ["dialect"])
FRAMES_IN = Counter("dari_frames_in_total", "Frames received from clients")
BYTES_IN = Counter("dari_bytes_in_total", "Bytes received from clients (frame payloads)")
FRAMES_OUT = Counter("dari_frames_out_total", "Frames sent to clients")
BYTES_OUT = Counter("dari_bytes_out_total", "Bytes sent to clients (frame payloads)")
TOKENS = Counter("dari_tokens_streamed_total", "Answer pieces streamed", ["agent"])
COALESCED = Counter(
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
ANSWER_DURATION = Histogram(
    "dari_answer_duration_seconds",
    "From an answer's start to its end",
    ["agent", "finish_reason"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
REPLAY = Counter("dari_resume_total", "Reconnections that asked to resume", ["result"])
REPLAYED_FRAMES = Counter("dari_replayed_frames_total", "Frames sent again on resume")
ERRORS = Counter("dari_errors_total", "Error frames sent", ["code"])
RATE_LIMITED = Counter("dari_rate_limited_total", "Frames refused by the rate limit")
