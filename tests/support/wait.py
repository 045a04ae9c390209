"""Waiting on a condition, never on a fixed sleep: polled until true, bounded against a hang."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.support.server import HTTP_TIMEOUT


def until(condition: Callable[[], bool], timeout: float = HTTP_TIMEOUT, what: str = "") -> None:
    """Returns once ``condition()`` is true; fails if it is not within ``timeout`` seconds.

    The timeout is no speed requirement: it only ends a test whose condition
    never comes (a loaded machine may take long to get there).
    """
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not met in {timeout} s: {what or condition}"
        time.sleep(0.1)
