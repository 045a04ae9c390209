"""Real documents for tests, written with real libraries: PDF (fpdf2), DOCX (python-docx)."""

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
