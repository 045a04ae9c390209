"""Damaged documents of every type: read, or refused with the extractor's own errors.

``fuzz/document_extract.py`` fuzzes the same function for longer. Two kinds of
crash it found are pinned below as strict xfails, reported to the owner of
``memory/extract.py``: on the server they are contained (the helper process
that reads documents turns any exception into a 400 naming it), but the
extractor itself should say what was wrong with the file.
"""

from __future__ import annotations

import contextlib
import io
import traceback
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blackroad.errors import InvalidRequest, PayloadTooLarge
from blackroad.memory.extract import extract
from tests.support.documents import samples

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


def reported(error: BaseException) -> bool:
    """One of the two crashes pinned by the xfails below, raised where they are."""
    where = traceback.extract_tb(error.__traceback__)[-1].filename
    return (isinstance(error, AssertionError) and where.endswith("_markupbase.py")) or (
        isinstance(error, UnicodeDecodeError) and where.endswith("zipfile.py")
    )


@settings(max_examples=200, deadline=None)
@given(document=damaged())
def test_a_damaged_document_is_read_or_refused(document: tuple[str, bytes]) -> None:
    name, data = document
    try:
        with contextlib.suppress(InvalidRequest, PayloadTooLarge):
            extract(data, name)
    except Exception as error:
        if not reported(error):
            raise


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="reported: HTMLParser's assert")
def test_an_unknown_marked_section_in_html_is_refused() -> None:
    # Python 3.11's html.parser asserts on a marked section it does not know.
    with pytest.raises(InvalidRequest, match=r"page\.html"):
        extract(b"<!DOCTYPE html><![foo]>", "page.html")


def utf8_flagged_with_a_bad_name() -> bytes:
    """A docx-like zip whose member name is flagged UTF-8 but is not."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("word/document.xml", "<x/>")
    data = bytearray(buffer.getvalue())
    for signature, flags in ((b"PK\x01\x02", 8), (b"PK\x03\x04", 6)):
        at = data.find(signature) + flags
        data[at : at + 2] = (int.from_bytes(data[at : at + 2], "little") | 0x800).to_bytes(
            2, "little"
        )
    data[data.find(b"PK\x01\x02") + 46] = 0xFD  # the first byte of the name
    return bytes(data)


@pytest.mark.xfail(strict=True, raises=UnicodeDecodeError, reason="reported: zipfile's names")
@pytest.mark.parametrize("name", ["letter.docx", "upload"])
def test_a_zip_with_a_name_that_is_not_utf8_is_refused(name: str) -> None:
    # zipfile raises UnicodeDecodeError; _read_docx and _is_docx catch BadZipFile only.
    with pytest.raises(InvalidRequest):
        extract(utf8_flagged_with_a_bad_name(), name)
