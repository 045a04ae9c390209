"""Fuzz the document extractors (``memory/extract.py``): any user uploads any file.

    python fuzz/document_extract.py -atheris_runs=20000

An input's first byte picks the file's name (its type: txt, md, html, pdf,
docx, csv, or none, to be told by its content); the rest are its bytes. Each
is read or refused with ``InvalidRequest`` or ``PayloadTooLarge``: never
another exception, a hang past ``-timeout``, or memory past ``-rss_limit_mb``.
pypdf's warnings about the damage it repairs are silenced.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import atheris
from common import fuzz

with atheris.instrument_imports():
    from tests.support.documents import samples

    from blackroad.errors import InvalidRequest, PayloadTooLarge
    from blackroad.memory.extract import extract

SEEDS = samples()
NAMES = list(SEEDS)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    name = NAMES[data[0] % len(NAMES)]
    with contextlib.suppress(InvalidRequest, PayloadTooLarge):
        extract(data[1:], name, max_characters=1_000_000)


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    fuzz(test_one_input, {f"{n}": bytes([NAMES.index(n)]) + d for n, d in SEEDS.items()})
    sys.exit(0)
