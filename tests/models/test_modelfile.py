"""A Modelfile is untrusted text: read in linear time, refused with InvalidRequest, rendered whole.

``fuzz/modelfile.py`` fuzzes the same parser for longer (see ``fuzz/README.md``).
"""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blackroad.errors import InvalidRequest
from blackroad.models.modelfile import Modelfile, parse, render

WORDS = ["FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "MESSAGE", "LICENSE", "ADAPTER", "from",
         "#", '"""', '"', "\\", "stop", "num_ctx", "temperature", "user", "1", "x", " ", "\n",
         "\t", "\r", "\u2028", "\x85", "\x0c", "\x1f", "\\u0041"]  # fmt: skip
MODELFILE_TEXT = st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=5)), max_size=30).map(
    "".join
)


@pytest.mark.timeout(120)  # a hang detector: the old parser took hours on this
def test_a_long_unterminated_triple_quote_is_refused_in_linear_time() -> None:
    # Each line appended re-searched the whole value for the closing quotes:
    # 80,000 lines took 11 s, the 8 MB a request may carry would take hours.
    with pytest.raises(InvalidRequest, match='line 2: unterminated """'):
        parse('FROM x\nTEMPLATE """' + "a\n" * 1_000_000)


@pytest.mark.parametrize("value", ['"a\\x"', '"a" "b"', '"\\ud800"', '"\\u12"'])
def test_a_broken_quoted_value_is_refused(value: str) -> None:
    # json.loads' JSONDecodeError went up as it was: a 500 from /api/create.
    with pytest.raises(InvalidRequest, match=r"line 2: .* is not one quoted string"):
        parse(f"FROM x\nSYSTEM {value}")


def test_a_lone_surrogate_is_refused_wherever_it_is() -> None:
    with pytest.raises(InvalidRequest, match="a Modelfile is text"):
        parse("FROM x\nSYSTEM \udcff")


@pytest.mark.parametrize(
    "value",
    [
        'ends with a quote"',
        'holds """ quotes',
        "a carriage\rreturn",
        "a\u2028separator",
        "two\nlines",
        " spaced ",
        "trailing spaces  \nbefore a line break",
    ],
)
def test_render_gives_back_what_it_was_given(value: str) -> None:
    # Written in triple quotes whatever they held, these came back cut or changed.
    model = Modelfile(base=value, template=value, system=value, license=[value],
                      messages=[{"role": "user", "content": value}])  # fmt: skip
    assert parse(render(model)) == model


@pytest.mark.parametrize("space", ["\t", "\x1f", "\u3000"])
def test_any_whitespace_separates_a_command_its_parameter_and_its_role(space: str) -> None:
    # The name was cut at " " only, then stripped for the check but kept for the
    # key: "stop\x1f" passed as stop and rendered as a line that read back as junk.
    model = parse(f'FROM{space}x\nPARAMETER{space}stop{space}"END"\nMESSAGE{space}user{space}Hi')
    assert model.parameters == {"stop": ["END"]}
    assert model.messages == [{"role": "user", "content": "Hi"}]
    assert parse(render(model)) == model


def unset_if_empty(model: Modelfile) -> Modelfile:
    """``render`` leaves out an empty template or system message: both mean none."""
    return dataclasses.replace(model, template=model.template or None, system=model.system or None)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(text=MODELFILE_TEXT)
def test_any_text_is_read_or_refused_and_what_is_read_renders_back(text: str) -> None:
    model = None
    with contextlib.suppress(InvalidRequest):
        model = parse(text)
    if model is not None:
        assert unset_if_empty(parse(render(model))) == unset_if_empty(model)
