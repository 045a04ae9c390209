"""Fuzz the Modelfile parser (``models/modelfile.py``): /api/create takes one from any caller.

    python fuzz/modelfile.py -atheris_runs=100000

Any text is read or refused with ``InvalidRequest``, in time linear in its
length, and what is read renders back (``render``, /api/show's Modelfile) to
itself: an empty template or system message counts as none. Bytes that are
not UTF-8 reach it as lone surrogates, as ``"\\udcff"`` in a JSON body does.
"""

from __future__ import annotations

import dataclasses
import sys

import atheris
from common import fuzz

with atheris.instrument_imports():
    from blackroad.errors import InvalidRequest
    from blackroad.models.modelfile import Modelfile, parse, render

SEED = '''FROM smollm2:135m
# a comment
PARAMETER temperature 0.2
PARAMETER stop "<|im_end|>"
PARAMETER num_ctx 2048
TEMPLATE """{% for m in messages %}{{ m.content }}
{% endfor %}"""
SYSTEM "You are terse."
MESSAGE user """Hi"""
MESSAGE assistant Hello
LICENSE """MIT"""
'''


def unset_if_empty(model: Modelfile) -> Modelfile:
    return dataclasses.replace(model, template=model.template or None, system=model.system or None)


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")  # bytes that are no UTF-8: lone surrogates
    try:
        model = parse(text)
    except InvalidRequest:
        return
    again = parse(render(model))
    if repr(unset_if_empty(again)) != repr(unset_if_empty(model)):  # repr: nan is nan
        raise AssertionError(f"{model!r} rendered back as {again!r}")


if __name__ == "__main__":
    fuzz(test_one_input, {"modelfile": SEED.encode(), "from": b"FROM x\n"})
    sys.exit(0)
