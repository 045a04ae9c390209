"""Slowing down, then locking out, a client address that keeps presenting wrong credentials.

Failures are counted per client address over a sliding window. Past
``slow_after`` failures each refusal is delayed (doubling, at most
``MAX_DELAY``), which makes guessing slow without affecting anyone who
types a key right; at ``attempts`` failures the address is refused every
request, valid key or not, for ``lock_seconds``. A success does not reset
the count: an attacker holding one valid key of her own must not be able to
clear her record between guesses at someone else's.

Addresses are the clients' as ``api/proxies.py`` finds them: behind a
proxy listed in ``BLACKROAD_TRUSTED_PROXIES``, the client it forwarded, so a
lockout locks that client, not everyone behind the proxy.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque

from blackroad.errors import RateLimited

log = logging.getLogger(__name__)

MAX_DELAY = 4.0
FIRST_DELAY = 0.25
# Past this many tracked addresses, stale entries are dropped on the next failure.
PRUNE_ABOVE = 10_000


class Lockout:
    def __init__(self, slow_after: int, attempts: int, window: float, lock_seconds: float) -> None:
        self.slow_after = slow_after
        self.attempts = attempts
        self.window = window
        self.lock_seconds = lock_seconds
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Raise ``RateLimited`` while ``client`` is locked out."""
        until = self._locked_until.get(client)
        if until is None:
            return
        remaining = until - time.monotonic()
        if remaining <= 0:
            with self._lock:
                self._locked_until.pop(client, None)
            return
        raise RateLimited(
            "Too many failed authentication attempts from this address; "
            f"try again in {math.ceil(remaining)}s.",
            math.ceil(remaining),
        )

    def failed(self, client: str) -> float:
        """Count a failure; the seconds to wait before answering it."""
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > PRUNE_ABOVE:
                self._prune(now)
            failures = self._failures.setdefault(client, deque())
            failures.append(now)
            while failures[0] <= now - self.window:
                failures.popleft()
            count = len(failures)
            if count >= self.attempts:
                self._locked_until[client] = now + self.lock_seconds
                failures.clear()
        if count >= self.attempts:
            log.warning(
                "locked out %s for %ds after %d failed authentication attempts in %ds",
                client,
                self.lock_seconds,
                count,
                self.window,
            )
        if count <= self.slow_after:
            return 0.0
        return float(min(MAX_DELAY, FIRST_DELAY * 2 ** (count - self.slow_after - 1)))

    def _prune(self, now: float) -> None:
        for client in [c for c, f in self._failures.items() if not f or f[-1] <= now - self.window]:
            del self._failures[client]
        for client in [c for c, until in self._locked_until.items() if until <= now]:
            del self._locked_until[client]
