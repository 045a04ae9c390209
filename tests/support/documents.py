"""Real documents for tests, written with real libraries: PDF (fpdf2), DOCX (python-docx),
and one small sample of each supported type (the fuzzers' seeds)."""

from __future__ import annotations

import io

import docx
from fpdf import FPDF


def pdf(pages: list[str], title: str | None = None) -> bytes:
    """A PDF with one page per string (plain text, wrapped)."""
    document = FPDF()
    if title:
        document.set_title(title)
    document.set_font("helvetica", size=11)
    for text in pages:
        document.add_page()
        document.multi_cell(0, 6, text)
    return bytes(document.output())


def docx_file(sections: list[tuple[str, list[str]]], title: str | None = None) -> bytes:
    """A DOCX of (heading, paragraphs) sections, headings in Word's heading style."""
    document = docx.Document()
    if title:
        document.core_properties.title = title
    for heading, paragraphs in sections:
        document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def samples() -> dict[str, bytes]:
    """One small document of each type, by a file name that says the type."""
    return {
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
