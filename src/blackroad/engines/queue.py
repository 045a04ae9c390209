"""Admission for one engine: up to ``capacity`` jobs at once, the rest wait in arrival order.

A job is a generation (it holds its place until the model's worker has
finished it) or a short call such as tokenizing. Waiters are woken strictly
first-in first-out, which is the fairness the API promises, and a newcomer
never overtakes someone already waiting. The bound on waiters turns
overload into an immediate 503 instead of an ever-growing wait.
"""

from __future__ import annotations

import asyncio
from collections import deque

from blackroad.errors import QueueFull


class FairQueue:
    def __init__(self, max_waiting: int, retry_after: int, capacity: int = 1) -> None:
        self.max_waiting = max_waiting
        self.retry_after = retry_after
        self.capacity = capacity
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def active(self) -> int:
        return self._active

    @property
    def busy(self) -> bool:
        return self._active > 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        """Wait for this job's turn; raise QueueFull when too many already wait."""
        if self._active < self.capacity and not self._waiters:
            self._active += 1
            return
        if len(self._waiters) >= self.max_waiting:
            raise QueueFull(
                f"the model is busy and {len(self._waiters)} requests are already waiting; "
                "retry later",
                retry_after=self.retry_after,
            )
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await turn  # release() counted this job in ``_active`` when it woke it
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # woken, then cancelled before running: pass the turn on
            else:
                self._waiters.remove(turn)
            raise

    def release(self) -> None:
        self._active -= 1
        while self._waiters and self._active < self.capacity:
            turn = self._waiters.popleft()
            if not turn.done():
                self._active += 1
                turn.set_result(None)
