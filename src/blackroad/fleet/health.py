"""Whether a node may be sent requests: a circuit breaker per node.

Closed (the node serves), open (it failed: no requests until a cool-down has
passed), half-open (one trial request, or the next active probe, decides).
A node that refuses connections or drops one mid-answer is opened on that
first failure, so a killed node leaves the rotation at once; other failures
(timeouts, 5xx) open it after ``threshold`` in a row. A node that refuses
BlackRoad's key opens it for a minute at a time. Each time a half-open
trial fails the cool-down doubles, up to ``max_cooldown``; any success closes
the breaker and resets it. ``recoveries`` counts the times it closed again
after opening: a job that a node failed may go back to it once it has.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

BreakerState = Literal["closed", "open", "half-open"]
# A node that refuses BlackRoad's key is asked again this rarely: five times in
# the five minutes over which its lockout counts ten wrong keys.
REFUSED_COOLDOWN = 60.0


@dataclass
class Breaker:
    threshold: int = 3
    base_cooldown: float = 1.0
    max_cooldown: float = 10.0
    state: BreakerState = "closed"
    failures: int = 0  # in a row
    cooldown: float = field(init=False)
    opened_at: float = 0.0
    trial: bool = False  # a half-open trial request is in flight
    recoveries: int = 0  # times it closed again after opening

    def __post_init__(self) -> None:
        self.cooldown = self.base_cooldown

    def available(self, now: float | None = None) -> bool:
        """May a request go to the node now? (Closed, or a half-open trial is free.)"""
        if self.state == "closed":
            return True
        now = time.monotonic() if now is None else now
        if self.state == "open" and now - self.opened_at >= self.cooldown:
            self.state, self.trial = "half-open", False
        return self.state == "half-open" and not self.trial

    def begin(self) -> None:
        """A request goes to the node: in half-open state it is the one trial."""
        if self.state != "closed":
            self.trial = True

    def success(self) -> None:
        if self.state != "closed":
            self.recoveries += 1
        self.state, self.failures, self.trial = "closed", 0, False
        self.cooldown = self.base_cooldown

    def failure(self, dead: bool = False, refused: bool = False) -> None:
        self.failures += 1
        if refused:
            # Each attempt with a key the node refuses is a wrong key to it;
            # asked at the usual pace, the node would lock BlackRoad out.
            self.cooldown = max(self.cooldown, REFUSED_COOLDOWN)
        elif self.state == "half-open":
            self.cooldown = min(self.cooldown * 2, self.max_cooldown)
        elif not dead and self.failures < self.threshold:
            return
        self.state, self.opened_at, self.trial = "open", time.monotonic(), False
