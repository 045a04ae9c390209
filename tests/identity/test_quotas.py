"""Limits, budgets and lockout in process: ``Quotas`` and ``Lockout`` on a fake clock, no server.

The minute windows are moved with a fake ``time.monotonic``; budgets are
seeded from a real SQLite request log, and the calendar is either the real
one (expectations computed from the dates inserted) or a fake ``datetime.now``
to reach a month's end or the next day on purpose.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

import pytest

import blackroad.identity.lockout as lockout_module
import blackroad.identity.quotas as quotas_module
from blackroad.errors import RateLimited
from blackroad.identity.lockout import MAX_DELAY, Lockout
from blackroad.identity.quotas import Admission, Quotas
from blackroad.identity.types import LOCAL_ADMIN, Limits, Principal
from blackroad.store.database import Database
from blackroad.store.schema import RequestRecord

KEY = "br-aaaaaaaaa"
OTHER_KEY = "br-bbbbbbbbb"


class Clock:
    """Stands in for the ``time`` module (``monotonic``) and ``datetime`` (``now``)."""

    def __init__(self, wall: datetime | None = None) -> None:
        self.mono = 10_000.0
        self.wall = wall if wall is not None else datetime.now(UTC)

    def monotonic(self) -> float:
        return self.mono

    def now(self, tz: tzinfo | None = None) -> datetime:
        return self.wall if tz is None else self.wall.astimezone(tz)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A fake monotonic clock for ``quotas`` and ``lockout``; the calendar stays real."""
    fake = Clock()
    monkeypatch.setattr(quotas_module, "time", fake)
    monkeypatch.setattr(lockout_module, "time", fake)
    return fake


def frozen_calendar(monkeypatch: pytest.MonkeyPatch, clock: Clock, wall: datetime) -> None:
    """Make ``quotas`` see ``wall`` as the current UTC time (and move it with ``clock``)."""
    clock.wall = wall
    monkeypatch.setattr(quotas_module, "datetime", clock)


def caller(
    user: str = "ann",
    key: str | None = KEY,
    user_limits: Limits | None = None,
    key_limits: Limits | None = None,
) -> Principal:
    return Principal(
        user=user,
        role="user",
        scopes=frozenset({"inference"}),
        key_prefix=key,
        user_limits=user_limits or Limits(),
        key_limits=key_limits or Limits(),
    )


def no_log(user: str | None, key_prefix: str | None, since: datetime) -> int:
    return 0


def refused(quotas: Quotas, principal: Principal) -> RateLimited:
    with pytest.raises(RateLimited) as refusal:
        quotas.admit(principal)
    assert refusal.value.status_code == 429
    return refusal.value


def admitted(quotas: Quotas, principal: Principal) -> Admission:
    admission = quotas.admit(principal)
    assert admission is not None
    return admission


# --- requests per minute ------------------------------------------------------------


def test_a_caller_without_limits_is_not_counted() -> None:
    quotas = Quotas(no_log)
    assert quotas.admit(caller()) is None
    assert quotas.admit(LOCAL_ADMIN) is None


def test_rpm_refuses_the_request_past_the_limit_for_a_minute(clock: Clock) -> None:
    quotas, ann = Quotas(no_log), caller(key_limits=Limits(rpm=3))
    for _ in range(3):
        admitted(quotas, ann).finish(0)
    refusal = refused(quotas, ann)
    assert refusal.kind == "requests" and refusal.code == "rate_limit_exceeded"
    assert refusal.retry_after == 60
    assert "RPM" in refusal.message and KEY in refusal.message
    clock.advance(59)
    assert refused(quotas, ann).retry_after == 1
    clock.advance(1)
    admitted(quotas, ann).finish(0)


def test_the_rpm_window_slides(clock: Clock) -> None:
    quotas, ann = Quotas(no_log), caller(key_limits=Limits(rpm=3))
    for _ in range(3):  # at 0, 20 and 40 s
        admitted(quotas, ann).finish(0)
        clock.advance(20)
    clock.advance(-10)  # 50 s: the first request leaves the window at 60 s
    assert refused(quotas, ann).retry_after == 10
    clock.advance(10)
    admitted(quotas, ann).finish(0)  # 60 s: now 20, 40 and 60 are in the window
    clock.advance(1)
    assert refused(quotas, ann).retry_after == 19


def test_a_lowered_rpm_waits_for_enough_requests_to_leave_the_window(clock: Clock) -> None:
    quotas = Quotas(no_log)
    for _ in range(3):  # at 0, 20 and 40 s, under a limit of 3
        admitted(quotas, caller(key_limits=Limits(rpm=3))).finish(0)
        clock.advance(20)
    clock.advance(-15)  # 45 s, and the limit is now 2: the requests of 0 and 20 s must go
    assert refused(quotas, caller(key_limits=Limits(rpm=2))).retry_after == 35


def test_a_refused_request_is_not_counted(clock: Clock) -> None:
    quotas, ann = Quotas(no_log), caller(key_limits=Limits(rpm=1))
    admitted(quotas, ann).finish(0)
    for _ in range(5):
        clock.advance(10)
        refused(quotas, ann)
    clock.advance(10)  # 60 s after the only admitted request
    admitted(quotas, ann).finish(0)


# --- concurrency ---------------------------------------------------------------------


def test_concurrency_refuses_until_a_request_finishes(clock: Clock) -> None:
    quotas, ann = Quotas(no_log), caller(user_limits=Limits(max_concurrent=1))
    first = admitted(quotas, ann)
    refusal = refused(quotas, ann)
    assert refusal.kind == "requests" and refusal.retry_after >= 1
    assert "Concurrency" in refusal.message and "user 'ann'" in refusal.message
    first.finish(0)
    second = admitted(quotas, ann)
    second.finish(0)


def test_finishing_twice_frees_one_slot_only(clock: Clock) -> None:
    quotas, ann = Quotas(no_log), caller(key_limits=Limits(max_concurrent=1))
    first = admitted(quotas, ann)
    first.finish(0)
    first.finish(0)
    admitted(quotas, ann)
    refused(quotas, ann)


# --- tokens per minute ---------------------------------------------------------------


def test_tpm_refuses_once_the_minute_has_used_the_limit(clock: Clock) -> None:
    quotas, ann = Quotas(no_log), caller(key_limits=Limits(tpm=100))
    admitted(quotas, ann).finish(60)  # at 0 s
    clock.advance(10)
    admitted(quotas, ann).finish(50)  # at 10 s: 110 tokens, the crossing request finished
    clock.advance(10)
    refusal = refused(quotas, ann)
    assert refusal.kind == "tokens" and refusal.code == "rate_limit_exceeded"
    assert "TPM" in refusal.message and "used 110" in refusal.message
    # Below the limit again once the 60 tokens of 0 s have left the window at 60 s.
    assert refusal.retry_after == 40
    clock.advance(39)
    refused(quotas, ann)
    clock.advance(1)
    admitted(quotas, ann).finish(50)  # 100 tokens in the window: the limit itself
    assert refused(quotas, ann).kind == "tokens"


def test_tpm_waits_until_the_window_is_below_the_limit(clock: Clock) -> None:
    quotas, ann = Quotas(no_log), caller(key_limits=Limits(tpm=100))
    admitted(quotas, ann).finish(10)  # at 0 s
    clock.advance(10)
    admitted(quotas, ann).finish(100)  # at 10 s
    clock.advance(10)
    # Without the 10 tokens of 0 s the window still holds 100, the limit: wait for 10 s's.
    assert refused(quotas, ann).retry_after == 50


def test_tokens_of_a_request_count_when_it_finishes(clock: Clock) -> None:
    quotas, ann = Quotas(no_log), caller(key_limits=Limits(tpm=10))
    first = admitted(quotas, ann)
    second = admitted(quotas, ann)  # nothing used yet: token limits look at finished requests
    first.finish(1000)
    second.finish(5)
    assert refused(quotas, ann).kind == "tokens"


# --- user and key limits together ----------------------------------------------------


def test_a_key_limit_refuses_while_the_user_limit_does_not(clock: Clock) -> None:
    quotas = Quotas(no_log)
    ann = caller(user_limits=Limits(rpm=10), key_limits=Limits(rpm=1))
    admitted(quotas, ann).finish(0)
    refusal = refused(quotas, ann)
    assert KEY in refusal.message and "user" not in refusal.message
    # The key's refusal did not count against the user: another key has 9 more.
    other = caller(key=OTHER_KEY, user_limits=Limits(rpm=10))
    for _ in range(9):
        admitted(quotas, other).finish(0)
    assert "user 'ann'" in refused(quotas, other).message


def test_a_user_limit_refuses_over_all_their_keys(clock: Clock) -> None:
    quotas = Quotas(no_log)
    first = caller(user_limits=Limits(rpm=2), key_limits=Limits(rpm=10))
    second = caller(key=OTHER_KEY, user_limits=Limits(rpm=2))
    admitted(quotas, first).finish(0)
    admitted(quotas, second).finish(0)
    for key in (first, second):
        refusal = refused(quotas, key)
        assert "user 'ann'" in refusal.message
    # Another user is counted apart.
    admitted(quotas, caller(user="bob", user_limits=Limits(rpm=2))).finish(0)


def test_a_limit_of_one_subject_does_not_count_another(clock: Clock) -> None:
    quotas = Quotas(no_log)
    admitted(quotas, caller(key_limits=Limits(max_concurrent=1)))
    admitted(quotas, caller(key=OTHER_KEY, key_limits=Limits(max_concurrent=1)))
    refused(quotas, caller(key_limits=Limits(max_concurrent=1)))


# --- budgets seeded from the request log ---------------------------------------------


def record(
    database: Database, at: datetime, tokens: int, user: str = "ann", key: str = KEY
) -> None:
    database.record_request(
        RequestRecord(
            created_at=at,
            method="POST",
            path="/v1/chat/completions",
            model="smollm2:135m",
            client="127.0.0.1:5000",
            user=user,
            key_prefix=key,
            node="test",
            status=200,
            prompt_tokens=tokens // 2,
            completion_tokens=tokens - tokens // 2,
            duration_ms=10.0,
        )
    )


@pytest.fixture
def database(database_location: Path | str) -> Database:
    return Database(database_location)


def clear_of_midnight() -> datetime:
    """Now, but not within a few seconds of a UTC day's end (when a day could turn mid-test)."""
    now = datetime.now(UTC)
    tomorrow = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    if (tomorrow - now).total_seconds() < 5:
        time.sleep((tomorrow - now).total_seconds() + 0.1)
    return datetime.now(UTC)


def test_a_daily_budget_is_seeded_from_todays_records(database: Database) -> None:
    now = clear_of_midnight()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    record(database, midnight, 900)  # today's first moment counts
    record(database, midnight - timedelta(seconds=1), 5000)  # yesterday's last does not
    record(database, now, 5000, user="bob", key=OTHER_KEY)  # nor does another user's
    quotas = Quotas(database.tokens_since)
    ann = caller(user_limits=Limits(daily_tokens=1000))
    admitted(quotas, ann).finish(200)  # 900 < 1000: once more
    refusal = refused(quotas, ann)
    assert refusal.kind == "insufficient_quota" and refusal.code == "insufficient_quota"
    assert "daily" in refusal.message and "1100 of 1000" in refusal.message
    renews = (midnight + timedelta(days=1) - datetime.now(UTC)).total_seconds()
    assert abs(refusal.retry_after - renews) <= 5


def test_a_monthly_budget_counts_the_whole_month(database: Database) -> None:
    now = clear_of_midnight()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = midnight - timedelta(hours=1)
    record(database, midnight, 300)
    record(database, yesterday, 500)
    record(database, midnight.replace(day=1) - timedelta(seconds=1), 10_000)  # last month
    month = 300 + (500 if yesterday.month == midnight.month else 0)
    quotas = Quotas(database.tokens_since)
    ann = caller(key_limits=Limits(daily_tokens=10_000, monthly_tokens=month + 1))
    admitted(quotas, ann).finish(1)
    refusal = refused(quotas, ann)
    assert refusal.kind == "insufficient_quota"
    assert f"monthly token budget of key {KEY}" in refusal.message
    assert f"{month + 1} of {month + 1}" in refusal.message
    next_month = (midnight.replace(day=1) + timedelta(days=32)).replace(day=1)
    renews = (next_month - datetime.now(UTC)).total_seconds()
    assert abs(refusal.retry_after - renews) <= 5


def test_a_key_budget_counts_only_that_keys_records(database: Database) -> None:
    now = clear_of_midnight()
    record(database, now, 400)
    record(database, now, 400, key=OTHER_KEY)  # the same user's other key
    quotas = Quotas(database.tokens_since)
    ann = caller(key_limits=Limits(daily_tokens=500))
    admitted(quotas, ann).finish(99)
    admitted(quotas, ann).finish(1)  # 500: used up
    assert refused(quotas, ann).kind == "insufficient_quota"
    # The user's limits are counted over both keys.
    both = caller(key=OTHER_KEY, user_limits=Limits(daily_tokens=900))
    admitted(quotas, both).finish(100)  # 800 recorded over both keys, and 100 more
    refusal = refused(quotas, both)
    assert refusal.message.startswith("The daily token budget of user 'ann'")
    assert "900 of 900" in refusal.message


def test_yesterdays_and_last_months_records_do_not_count(
    database: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen_calendar(monkeypatch, clock, datetime(2031, 3, 15, 12, 0, tzinfo=UTC))
    record(database, datetime(2031, 3, 15, 0, 0, tzinfo=UTC), 100)
    record(database, datetime(2031, 3, 14, 23, 59, 59, tzinfo=UTC), 200)
    record(database, datetime(2031, 2, 28, 23, 59, 59, tzinfo=UTC), 5000)
    quotas = Quotas(database.tokens_since)
    daily = caller(user_limits=Limits(daily_tokens=101))
    admitted(quotas, daily).finish(1)
    refusal = refused(quotas, daily)
    assert "101 of 101" in refusal.message
    assert refusal.retry_after == 12 * 3600
    monthly = caller(key_limits=Limits(monthly_tokens=301))
    admitted(quotas, monthly).finish(1)
    refusal = refused(quotas, monthly)
    assert "301 of 301" in refusal.message and "2031-04-01 00:00" in refusal.message
    assert refusal.retry_after == 16 * 86400 + 12 * 3600


def test_a_daily_budget_renews_at_midnight_utc(
    database: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen_calendar(monkeypatch, clock, datetime(2031, 12, 31, 23, 59, 0, tzinfo=UTC))
    record(database, datetime(2031, 12, 31, 10, 0, tzinfo=UTC), 1000)
    quotas = Quotas(database.tokens_since)
    ann = caller(user_limits=Limits(daily_tokens=1000, monthly_tokens=5000))
    refusal = refused(quotas, ann)
    assert refusal.retry_after == 60
    clock.advance(60)  # 2032-01-01 00:00: a new day and a new month
    admission = admitted(quotas, ann)
    admission.finish(999)
    admitted(quotas, ann).finish(1)
    refusal = refused(quotas, ann)
    assert "daily" in refusal.message and "1000 of 1000" in refusal.message
    assert refusal.retry_after == 86400


def test_the_monthly_budget_renews_in_january(
    database: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen_calendar(monkeypatch, clock, datetime(2031, 12, 31, 23, 0, 0, tzinfo=UTC))
    record(database, datetime(2031, 12, 1, 0, 0, tzinfo=UTC), 700)
    quotas = Quotas(database.tokens_since)
    ann = caller(key_limits=Limits(monthly_tokens=700))
    refusal = refused(quotas, ann)
    assert "2032-01-01 00:00" in refusal.message and refusal.retry_after == 3600
    clock.advance(3600)
    admitted(quotas, ann).finish(0)


# --- lockout -------------------------------------------------------------------------


def test_failures_are_slowed_then_locked_out(clock: Clock) -> None:
    guard = Lockout(slow_after=2, attempts=5, window=60, lock_seconds=30)
    delays = [guard.failed("10.0.0.1") for _ in range(4)]
    assert delays[:2] == [0.0, 0.0]
    assert 0 < delays[2] < delays[3]
    guard.check("10.0.0.1")  # four failures: slowed, not locked
    guard.failed("10.0.0.1")
    with pytest.raises(RateLimited) as locked:
        guard.check("10.0.0.1")
    assert locked.value.status_code == 429 and locked.value.retry_after == 30
    clock.advance(20)
    with pytest.raises(RateLimited) as still:
        guard.check("10.0.0.1")
    assert still.value.retry_after == 10
    guard.check("10.0.0.2")  # another address is unaffected
    assert guard.failed("10.0.0.2") == 0.0
    clock.advance(10)
    guard.check("10.0.0.1")  # the lock has expired
    assert guard.failed("10.0.0.1") == 0.0  # and the count starts again


def test_delays_double_up_to_a_cap(clock: Clock) -> None:
    guard = Lockout(slow_after=0, attempts=100, window=60, lock_seconds=30)
    delays = [guard.failed("10.0.0.1") for _ in range(8)]
    assert delays[:4] == [delays[0], 2 * delays[0], 4 * delays[0], 8 * delays[0]]
    assert delays[0] > 0 and max(delays) == MAX_DELAY == delays[-1]


def test_failures_older_than_the_window_are_forgotten(clock: Clock) -> None:
    guard = Lockout(slow_after=1, attempts=3, window=60, lock_seconds=30)
    guard.failed("10.0.0.1")
    assert guard.failed("10.0.0.1") > 0
    clock.advance(60)
    assert guard.failed("10.0.0.1") == 0.0  # the two earlier ones left the window
    guard.check("10.0.0.1")
    guard.failed("10.0.0.1")
    guard.failed("10.0.0.1")
    with pytest.raises(RateLimited):
        guard.check("10.0.0.1")


def lockout_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == lockout_module.__name__]


def test_a_lockout_is_logged(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    guard = Lockout(slow_after=1, attempts=2, window=60, lock_seconds=30)
    with caplog.at_level(logging.WARNING, logger=lockout_module.__name__):
        guard.failed("10.0.0.7")
        assert not lockout_lines(caplog)
        guard.failed("10.0.0.7")
    [line] = lockout_lines(caplog)
    assert line.levelno == logging.WARNING
    assert "locked out 10.0.0.7" in line.getMessage() and "30s" in line.getMessage()
