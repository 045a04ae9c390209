"""Damaged documents of every type: read, or refused with the extractor's own errors.

``fuzz/document_extract.py`` fuzzes the same function for longer; the three
kinds of crash it found are the cases below (on the server the helper process
that reads documents turned them into a 400 naming the exception, not the file).
"""

from __future__ import annotations

import contextlib
import io
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blackroad.errors import InvalidRequest, PayloadTooLarge
from blackroad.memory.extract import extract
from tests.support.documents import pdf, samples

SAMPLES = samples()
INSERTS = [b"<![x]>", b"<", b"PK\x03\x04", b"%PDF-", b"\x00", b"\xff\xfe", b'"', b"\r\n"]


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, bytes]:
    """A sample document with a few of its bytes changed, inserted or cut."""
    name = draw(st.sampled_from(sorted(SAMPLES)))
    data = bytearray(SAMPLES[name])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        action = draw(st.sampled_from(["byte", "insert", "cut"]))
        if action == "byte" and data:
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.sampled_from(INSERTS))
        else:
            del data[at:]
    return name, bytes(data)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(document=damaged())
def test_a_damaged_document_is_read_or_refused(document: tuple[str, bytes]) -> None:
    name, data = document
    with contextlib.suppress(InvalidRequest, PayloadTooLarge):
        extract(data, name)


def test_an_unknown_marked_section_in_html_is_refused() -> None:
    # Python 3.11's html.parser asserts on a marked section it does not know.
    with pytest.raises(InvalidRequest, match=r"page\.html"):
        extract(b"<!DOCTYPE html><![foo]>", "page.html")


def docx_like(name_flagged_utf8: bool, version_needed: int) -> bytes:
    """A docx-like zip; its member's name flagged UTF-8 but not, or needing a later zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("word/document.xml", "<x/>")
    data = bytearray(buffer.getvalue())
    directory = data.find(b"PK\x01\x02")
    data[directory + 6] = version_needed
    if name_flagged_utf8:
        for at in (directory + 8, data.find(b"PK\x03\x04") + 6):
            data[at + 1] |= 0x08  # bit 11 of the flags: the name is UTF-8
        data[directory + 46] = 0xFD  # the name's first byte, which UTF-8 never starts with
    return bytes(data)


@pytest.mark.parametrize("name", ["letter.docx", "upload"])
@pytest.mark.parametrize(
    ("flagged", "version"), [(True, 20), (False, 0xFF)], ids=["name", "version"]
)
def test_a_zip_python_cannot_open_is_refused(name: str, flagged: bool, version: int) -> None:
    # zipfile raised UnicodeDecodeError and NotImplementedError past the extractor.
    with pytest.raises(InvalidRequest):
        extract(docx_like(flagged, version), name)


def test_a_pdf_whose_title_is_not_text_is_read_without_one() -> None:
    # pypdf gives the /Title as it is written: a NumberObject had no split().
    data = pdf(["Some text."], title="Paper").replace(b"/Title (Paper)", b"/Title 1234567")
    read = extract(data, "paper.pdf")
    assert read.text == "Some text." and read.title is None
