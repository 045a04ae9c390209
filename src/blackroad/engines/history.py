"""Fitting a chat into a model's context, as Ollama's ``/api/chat`` does.

When the whole conversation does not fit, the oldest messages go: the system
messages and the last message always stay, and of the others the longest run
of the newest that fits is kept. The reply needs room too, so what is kept
leaves ``reserve`` tokens free, unless the last message alone is all that is
left (then it is sent as it is, and the engine refuses it if it cannot fit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from blackroad.engines.base import Message

log = logging.getLogger(__name__)


def fitted(
    messages: Sequence[Message],
    tokens: Callable[[Sequence[Message]], list[int]],
    n_ctx: int,
    reserve: int,
) -> list[int]:
    """The prompt (``tokens`` of the messages kept) of the newest messages that fit.

    Fewer messages never take more tokens, so the first one kept is found by
    bisection: a handful of renderings however long the chat.
    """

    def prompt(start: int) -> list[int]:
        return tokens(
            [m for i, m in enumerate(messages) if i >= start or m.get("role") == "system"]
        )

    low, high = 0, len(messages) - 1
    best = prompt(high)  # always the prompt of the messages from ``high`` on
    while low < high:
        middle = (low + high) // 2
        candidate = prompt(middle)
        if len(candidate) + reserve <= n_ctx:
            best, high = candidate, middle
        else:
            low = middle + 1
    total = len(messages)
    log.info("a chat did not fit %d tokens: its last %d of %d kept", n_ctx, total - high, total)
    return best
