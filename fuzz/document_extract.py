"""Fuzz the document extractors (``memory/extract.py``): any user uploads any file.

    python fuzz/document_extract.py -atheris_runs=20000

An input's first byte picks the file's name (its type: txt, md, html, pdf,
docx, csv, or none, to be told by its content); the rest are its bytes. Each
is read or refused with ``InvalidRequest`` or ``PayloadTooLarge``: never
another exception, a hang past ``-timeout``, or memory past ``-rss_limit_mb``.
"""

from __future__ import annotations

import contextlib
import sys

import atheris
from common import fuzz

with atheris.instrument_imports():
    from tests.support.documents import docx_file, pdf

    from blackroad.errors import InvalidRequest, PayloadTooLarge
    from blackroad.memory.extract import extract

NAMES = ["notes.txt", "notes.md", "page.html", "paper.pdf", "letter.docx", "table.csv", "upload"]
SEEDS = {
    "notes.txt": "Plain text.\r\nA second line, ünïcode ✓\n".encode(),
    "notes.md": b"# Title\n\nSome *markdown*.\n\n```\n# not a heading\n```\n## Section\n",
    "page.html": (
        b"<!doctype html><html><head><title>T</title><style>x{}</style></head><body>"
        b"<h1>Head</h1><p>Para &amp; more<br>next</p><ul><li>one</li></ul>"
        b"<table><tr><td>a</td><td>b</td></tr></table><pre>  code\n</pre></body></html>"
    ),
    "paper.pdf": pdf(["First page of text.", "Second page."], title="Paper"),
    "letter.docx": docx_file([("Heading", ["A paragraph.", "Another."])], title="Letter"),
    "table.csv": b"name,city\nAda,London\nAlan,\n",
    "upload": b"no extension, so text",
}


def test_one_input(data: bytes) -> None:
    if not data:
        return
    name = NAMES[data[0] % len(NAMES)]
    with contextlib.suppress(InvalidRequest, PayloadTooLarge):
        extract(data[1:], name, max_characters=1_000_000)


if __name__ == "__main__":
    fuzz(test_one_input, {f"{n}": bytes([NAMES.index(n)]) + d for n, d in SEEDS.items()})
    sys.exit(0)
