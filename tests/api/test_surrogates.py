"""Which JSON bodies hold a lone surrogate (``api/surrogates.py``); the routes' refusals
are tested with each API's errors (``test_openai_errors.py``, ``test_ollama_errors.py``)."""

from __future__ import annotations

import pytest

from blackroad.api.surrogates import holds_lone_surrogate


@pytest.mark.parametrize(
    ("body", "lone"),
    [
        (rb'{"a": "\udcff"}', True),  # a low surrogate alone
        (rb'{"a": "x\ud83d"}', True),  # a high one at the end
        (rb'{"a": "\ud83d x \ude00"}', True),  # both, apart
        (rb'{"\udcff": 1}', True),  # in a key
        (rb'{"a": [[{"b": ["\uDCFF"]}]]}', True),  # nested, upper case
        (rb'{"a": "\ud83d\ude00"}', False),  # a pair: one character
        (rb'{"a": "\\udcff"}', False),  # an escaped backslash, then text
        (rb'{"a": "\u00e9"}', False),
        (rb'{"a": "\udcff', False),  # not JSON: the route says so
        (b"[" * 100_000 + rb'"\udcff"' + b"]" * 100_000, False),  # too deep for json: likewise
    ],
)
def test_a_lone_surrogate_is_found_wherever_it_is(body: bytes, lone: bool) -> None:
    assert holds_lone_surrogate(body) is lone
