"""Enforcing ``Limits``: requests and tokens per minute, concurrency, daily and monthly budgets.

Counters live in this process's memory, one set per subject (a user, a key),
and only for subjects that have a limit. The minute windows are exact
sliding windows. Budgets are seeded from the request log the first time a
subject is seen in a day or month, so a restart forgets nothing already
recorded; after that, each finished request adds its tokens.

Tokens are known only when a request ends, so a token limit is checked
against what was already used: a request is refused once the minute's (or
the day's) tokens have reached the limit, and the request that crosses it
is allowed to finish, as OpenAI's own token limits behave.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from blackroad.errors import RateLimited
from blackroad.identity.types import Limits, Principal

WINDOW = 60.0
# A concurrency refusal cannot know when a slot frees up; a second is a fair guess.
CONCURRENCY_RETRY = 1

# (user, key_prefix, since) -> tokens recorded since then; exactly one of user and key is set.
TokensSince = Callable[[str | None, str | None, datetime], int]


@dataclass(frozen=True)
class Subject:
    """Whom a counter belongs to: a user by name, or a key by prefix."""

    user: str | None = None
    key_prefix: str | None = None

    def __str__(self) -> str:
        return f"user '{self.user}'" if self.user is not None else f"key {self.key_prefix}"


@dataclass
class _Budget:
    period: str  # "2026-11-25" or "2026-11": a new period starts from zero
    tokens: int


@dataclass
class _Counters:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_sum: int = 0  # of ``tokens``, kept as they come and go: checked on every request
    active: int = 0
    day: _Budget | None = None
    month: _Budget | None = None

    def expire(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - WINDOW:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= now - WINDOW:
            self.token_sum -= self.tokens.popleft()[1]


def _day_start(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _month_start(moment: datetime) -> datetime:
    return _day_start(moment).replace(day=1)


def _next_month(moment: datetime) -> datetime:
    start = _month_start(moment)
    return (start + timedelta(days=32)).replace(day=1)


def _seconds_until(moment: datetime, now: datetime) -> int:
    return math.ceil((moment - now).total_seconds())


@dataclass
class Admission:
    """One admitted request: its concurrency slots, freed with its tokens counted by ``finish``."""

    quotas: Quotas
    subjects: tuple[Subject, ...]
    finished: bool = False

    def finish(self, tokens: int) -> None:
        if not self.finished:
            self.finished = True
            self.quotas.finish(self.subjects, tokens)


class Quotas:
    """The limits of every caller of this server, enforced request by request."""

    def __init__(self, tokens_since: TokensSince) -> None:
        self._tokens_since = tokens_since
        self._counters: dict[Subject, _Counters] = {}
        self._lock = threading.Lock()

    def admit(self, caller: Principal) -> Admission | None:
        """Count a request against the caller's limits, or raise ``RateLimited``.

        The first request of a subject with a budget in a day or month reads
        the request log once (an indexed sum); every other admission is a few
        dictionary operations. ``None`` when the caller has no limits at all.
        """
        checks = [
            (subject, limits)
            for subject, limits in (
                (Subject(user=caller.user), caller.user_limits),
                (Subject(key_prefix=caller.key_prefix), caller.key_limits),
            )
            if limits.any() and (subject.user or subject.key_prefix)
        ]
        if not checks:
            return None
        for subject, limits in checks:
            if limits.daily_tokens is not None or limits.monthly_tokens is not None:
                self._seed(subject, datetime.now(UTC))
        with self._lock:
            now, today = time.monotonic(), datetime.now(UTC)
            for subject, limits in checks:
                self._check(
                    subject, limits, self._counters.setdefault(subject, _Counters()), now, today
                )
            for subject, _ in checks:
                counters = self._counters[subject]
                counters.requests.append(now)
                counters.active += 1
        return Admission(self, tuple(subject for subject, _ in checks))

    def finish(self, subjects: tuple[Subject, ...], tokens: int) -> None:
        now, today = time.monotonic(), datetime.now(UTC)
        with self._lock:
            for subject in subjects:
                counters = self._counters[subject]
                counters.active -= 1
                if tokens:
                    counters.tokens.append((now, tokens))
                    counters.token_sum += tokens
                    for budget, period in (
                        (counters.day, f"{today:%Y-%m-%d}"),
                        (counters.month, f"{today:%Y-%m}"),
                    ):
                        if budget is not None and budget.period == period:
                            budget.tokens += tokens

    def _seed(self, subject: Subject, today: datetime) -> None:
        """Load today's and this month's tokens from the request log, once per period."""
        with self._lock:
            counters = self._counters.setdefault(subject, _Counters())
            stale_day = counters.day is None or counters.day.period != f"{today:%Y-%m-%d}"
            stale_month = counters.month is None or counters.month.period != f"{today:%Y-%m}"
        if not (stale_day or stale_month):
            return
        day = self._tokens_since(subject.user, subject.key_prefix, _day_start(today))
        month = self._tokens_since(subject.user, subject.key_prefix, _month_start(today))
        with self._lock:
            if stale_day:
                counters.day = _Budget(f"{today:%Y-%m-%d}", day)
            if stale_month:
                counters.month = _Budget(f"{today:%Y-%m}", month)

    @staticmethod
    def _check(
        subject: Subject, limits: Limits, counters: _Counters, now: float, today: datetime
    ) -> None:
        counters.expire(now)
        if limits.max_concurrent is not None and counters.active >= limits.max_concurrent:
            raise RateLimited(
                f"Concurrency limit reached for {subject}: {limits.max_concurrent} requests "
                "at once. Wait for one to finish.",
                CONCURRENCY_RETRY,
            )
        if limits.rpm is not None and len(counters.requests) >= limits.rpm:
            wait = counters.requests[-limits.rpm] + WINDOW - now
            raise RateLimited(
                f"Rate limit reached for {subject} on requests per minute (RPM): "
                f"limit {limits.rpm}. Please try again in {math.ceil(wait)}s.",
                math.ceil(wait),
            )
        if limits.tpm is not None:
            used = counters.token_sum
            if used >= limits.tpm:
                # Wait until enough of the window's tokens have expired to go below the limit.
                excess, wait = used - limits.tpm, WINDOW
                for moment, tokens in counters.tokens:
                    excess -= tokens
                    if excess < 0:
                        wait = moment + WINDOW - now
                        break
                raise RateLimited(
                    f"Rate limit reached for {subject} on tokens per minute (TPM): "
                    f"limit {limits.tpm}, used {used}. Please try again in {math.ceil(wait)}s.",
                    math.ceil(wait),
                    kind="tokens",
                )
        for limit, budget, period, ends in (
            (limits.daily_tokens, counters.day, "daily", _day_start(today) + timedelta(days=1)),
            (limits.monthly_tokens, counters.month, "monthly", _next_month(today)),
        ):
            if limit is not None and budget is not None and budget.tokens >= limit:
                raise RateLimited(
                    f"The {period} token budget of {subject} is used up: {budget.tokens} of "
                    f"{limit} tokens. It renews at {ends:%Y-%m-%d %H:%M} UTC.",
                    _seconds_until(ends, today),
                    kind="insufficient_quota",
                )
