"""Stop sequences never leak, however the text is split into pieces."""

from __future__ import annotations

import pytest

from blackroad.engines.stops import StopMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    released = []
    for piece in pieces:
        text, stopped = matcher.push(piece)
        released.append(text)
        if stopped:
            return "".join(released), True
    return "".join(released) + matcher.flush(), False


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["Hello END world"], ("Hello ", True)),
        (["Hello E", "N", "D world"], ("Hello ", True)),
        (["Hel", "lo", " EN", "Dx"], ("Hello ", True)),
        (["Hello EN", "tirely"], ("Hello ENtirely", False)),
        (["Hello E"], ("Hello E", False)),
    ],
    ids=["whole", "split-in-three", "split-mid-piece", "false-start", "partial-at-end"],
)
def test_stop_split_across_pieces(pieces: list[str], expected: tuple[str, bool]) -> None:
    assert run(["END"], pieces) == expected


def test_earliest_of_several_stops_wins() -> None:
    assert run(["world", "lo w"], ["Hello world"]) == ("Hel", True)


def test_held_text_is_never_released_before_it_is_known() -> None:
    matcher = StopMatcher(["<|end|>"])
    assert matcher.push("answer <|e") == ("answer ", False)
    assert matcher.push("nd|>") == ("", True)


def test_no_stops_releases_everything() -> None:
    assert run([], ["a", "b"]) == ("ab", False)
