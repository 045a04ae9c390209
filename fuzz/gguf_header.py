"""Fuzz the GGUF header reader (``models/gguf_header.py``): a model file is untrusted.

    python fuzz/gguf_header.py -atheris_runs=100000

A malformed GGUF must be refused with ``InvalidRequest``: never another
exception, a hang, or an allocation the file's size does not justify.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import atheris
from common import fuzz

with atheris.instrument_imports():
    from tests.support.gguf_files import tiny_gguf_bytes

    from blackroad.errors import InvalidRequest
    from blackroad.models.gguf_header import read_header

FILE = Path(tempfile.mkdtemp(prefix="gguf-fuzz-")) / "model.gguf"


def test_one_input(data: bytes) -> None:
    FILE.write_bytes(data)
    with contextlib.suppress(InvalidRequest):
        read_header(FILE)


if __name__ == "__main__":
    fuzz(
        test_one_input,
        {
            "chat.gguf": tiny_gguf_bytes(),
            "bert.gguf": tiny_gguf_bytes("bert", pooling=1),
            "big-endian.gguf": tiny_gguf_bytes(big_endian=True),
        },
    )
    sys.exit(0)
