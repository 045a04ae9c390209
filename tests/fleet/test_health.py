"""The breaker of a node, and how a job resumes on another node after a partial answer."""

from __future__ import annotations

from blackroad.engines.base import SamplingParams
from blackroad.fleet.health import REFUSED_COOLDOWN, Breaker
from blackroad.fleet.members import Job


def state(breaker: Breaker) -> str:
    # A function, not the attribute: mypy keeps narrowing an attribute across method calls.
    return breaker.state


def test_a_dead_node_opens_the_breaker_at_once_a_failing_one_after_the_threshold() -> None:
    dead = Breaker()
    dead.failure(dead=True)
    assert state(dead) == "open" and not dead.available(dead.opened_at)
    flaky = Breaker(threshold=3)
    flaky.failure()
    flaky.failure()
    assert state(flaky) == "closed" and flaky.available()
    flaky.failure()
    assert state(flaky) == "open"


def test_after_the_cooldown_one_trial_goes_through_and_decides() -> None:
    breaker = Breaker(base_cooldown=1.0, max_cooldown=3.0)
    breaker.failure(dead=True)
    later = breaker.opened_at + 1.0
    assert breaker.available(later) and state(breaker) == "half-open"
    breaker.begin()
    assert not breaker.available(later)  # only one trial at a time
    breaker.failure()
    assert state(breaker) == "open" and breaker.cooldown == 2.0
    assert not breaker.available(breaker.opened_at + 1.5)
    assert breaker.available(breaker.opened_at + 2.0)
    breaker.begin()
    breaker.failure()
    assert breaker.cooldown == 3.0  # doubled, up to the maximum
    breaker.success()
    assert (state(breaker), breaker.failures, breaker.cooldown) == ("closed", 0, 1.0)


def test_a_resumed_chat_continues_the_assistant_message_within_the_token_limit() -> None:
    job = Job("m", SamplingParams(max_tokens=10), messages=[{"role": "user", "content": "hi"}])
    once = job.resumed("Hello", 3)
    assert once.messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert once.continue_final and once.params.max_tokens == 7
    twice = once.resumed(" there", 2)
    assert twice.messages is not None and twice.messages[-1]["content"] == "Hello there"
    assert len(twice.messages) == 2 and twice.params.max_tokens == 5


def test_a_resumed_completion_appends_to_the_prompt() -> None:
    job = Job("m", SamplingParams(), prompt="Once upon")
    resumed = job.resumed(" a time", 2)
    assert resumed.prompt == "Once upon a time" and resumed.params.max_tokens is None


def test_a_node_refusing_our_key_is_asked_again_only_after_a_minute() -> None:
    breaker = Breaker()
    breaker.failure(refused=True)
    assert state(breaker) == "open" and breaker.cooldown == REFUSED_COOLDOWN
    assert not breaker.available(breaker.opened_at + REFUSED_COOLDOWN - 1)
    assert breaker.available(breaker.opened_at + REFUSED_COOLDOWN)


def test_recoveries_count_each_time_the_breaker_closes_after_opening() -> None:
    breaker = Breaker()
    breaker.success()
    breaker.failure()  # below the threshold: it stays closed, nothing to recover from
    breaker.success()
    assert breaker.recoveries == 0
    breaker.failure(dead=True)
    breaker.success()  # a probe heard it again: a job it failed may go back to it
    assert (state(breaker), breaker.recoveries) == ("closed", 1)
