"""Admission for one engine: one job at a time, the rest wait in arrival order.

``asyncio.Lock`` hands itself to waiters strictly first-in first-out, which
is the fairness the API promises. The bound turns overload into an immediate
503 instead of an ever-growing wait.
"""

from __future__ import annotations

import asyncio

from blackroad.errors import QueueFull


class FairQueue:
    def __init__(self, max_waiting: int, retry_after: int) -> None:
        self.max_waiting = max_waiting
        self.retry_after = retry_after
        self._lock = asyncio.Lock()
        self._waiting = 0

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    @property
    def waiting(self) -> int:
        return self._waiting

    async def acquire(self) -> None:
        """Wait for this request's turn; raise QueueFull when too many already wait."""
        if self._lock.locked() and self._waiting >= self.max_waiting:
            raise QueueFull(
                f"the model is busy and {self._waiting} requests are already waiting; retry later",
                retry_after=self.retry_after,
            )
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1

    def release(self) -> None:
        self._lock.release()
