"""A token bucket for rate-limiting ICMP error messages (RFC 1812 4.3.2.8, RFC 4443 2.4(f))."""
from __future__ import annotations

import time
from typing import Callable


class TokenBucket:
    """``rate_per_s`` tokens a second accrue up to ``burst``; each allowed event spends one.

    The bucket starts full. Times come from ``clock`` (seconds); a clock that
    steps backwards adds no tokens.
    """

    def __init__(self, rate_per_s: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s < 0 or burst < 1:
            raise ValueError("rate_per_s must be >= 0 and burst >= 1")
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()
        self.allowed = 0
        self.denied = 0

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._last = max(self._last, now)

    def tokens(self) -> float:
        """Tokens available now."""
        self._refill()
        return self._tokens

    def allow(self, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are that many; True when the event may go ahead."""
        self._refill()
        if self._tokens >= cost:
            self._tokens -= cost
            self.allowed += 1
            return True
        self.denied += 1
        return False

    def stats(self) -> dict[str, int]:
        """Events allowed and denied so far."""
        return {"allowed": self.allowed, "denied": self.denied}
