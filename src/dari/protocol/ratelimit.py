"""A token bucket, with time passed in so it can be tested without a clock."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens added per second
    burst: float  # bucket size
    tokens: float = field(init=False)
    updated: float | None = field(init=False, default=None)  # None: never used
    strikes: int = field(init=False, default=0)  # refusals in a row

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, now: float, cost: float = 1.0) -> bool:
        if self.updated is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            self.strikes = 0
            return True
        self.strikes += 1
        return False

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are there (0 when they are), as of the last ``take``."""
        return max(0.0, (cost - self.tokens) / self.rate)

    def full_at(self) -> float:
        """When the bucket is full again: after that, forgetting it changes nothing."""
        return (self.updated or 0.0) + (self.burst - self.tokens) / self.rate
