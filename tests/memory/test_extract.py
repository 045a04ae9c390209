"""Text extraction from real files of every supported type, made here with real libraries."""

from __future__ import annotations

import io
import zipfile

import docx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blackroad.errors import InvalidRequest, PayloadTooLarge
from blackroad.memory import extract as extraction
from blackroad.memory.extract import (
    CSV,
    DOCX,
    HTML,
    MARKDOWN,
    PDF,
    TEXT,
    Extracted,
    Page,
    extract,
    headings,
)
from tests.support.documents import pdf

PAGES = [
    "Triage comes first. Every patient is seen within ten minutes.",
    "Sepsis bundle: lactate, cultures, antibiotics within one hour.",
    "Discharge letters go to the family doctor the same day.",
]


def test_a_pdf_gives_each_page_at_its_offsets_and_its_title() -> None:
    document = extract(pdf(PAGES, title="Ward handbook"), "handbook.pdf")
    assert document.media_type == PDF
    assert document.title == "Ward handbook"
    assert [page.number for page in document.pages] == [1, 2, 3]
    for page, written in zip(document.pages, PAGES, strict=True):
        assert " ".join(document.text[page.start : page.end].split()) == written
    assert document.text == "\n\n".join(document.text[p.start : p.end] for p in document.pages)


def test_a_pdf_page_without_text_is_an_empty_range_between_its_neighbours() -> None:
    document = extract(pdf([PAGES[0], "", PAGES[2]]), "gap.pdf")
    first, empty, last = document.pages
    assert (empty.number, empty.start, empty.end) == (2, first.end, first.end)
    assert " ".join(document.text[last.start : last.end].split()) == PAGES[2]
    assert document.title is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF", "scan.pdf: not a readable PDF ("),
        (b"not a pdf at all", "scan.pdf: not a readable PDF (no %PDF- header)"),
        (pdf(["", ""]), "scan.pdf: the PDF has no text to extract"),
    ],
)
def test_an_unreadable_pdf_is_refused_naming_the_file(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        extract(data, "scan.pdf")
    assert refused.value.message.startswith(reason)
    assert refused.value.param == "file"


def test_a_pdf_with_too_many_pages_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extraction, "MAX_PDF_PAGES", 2)
    with pytest.raises(PayloadTooLarge, match=r"^big\.pdf: 3 pages, more than 2$"):
        extract(pdf(PAGES), "big.pdf")


def word_document() -> bytes:
    document = docx.Document()
    document.core_properties.title = "Night shift"
    document.add_heading("Handover", level=1)
    document.add_paragraph("Start at the nurses' station.")
    document.add_paragraph("")  # an empty paragraph leaves no trace
    document.add_heading("Checks", level=2)
    document.add_paragraph("Oxygen", style="List Bullet")
    document.add_paragraph("Line one\nline two")
    table = document.add_table(rows=2, cols=3)
    for row, cells in zip(table.rows, [("Bed", "Name", "Note"), ("4", "Ms Diaz", "")], strict=True):
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    merged = document.add_table(rows=1, cols=2)
    merged.cell(0, 0).merge(merged.cell(0, 1)).text = "Spans two columns"
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_a_docx_keeps_headings_as_markdown_lists_and_tables_as_rows() -> None:
    document = extract(word_document(), "shift.docx")
    assert document == Extracted(
        text=(
            "# Handover\n\nStart at the nurses' station.\n\n## Checks\n\n- Oxygen\n\n"
            "Line one\nline two\n\nBed | Name | Note\n4 | Ms Diaz\n\nSpans two columns"
        ),
        media_type=DOCX,
        pages=(),
        title="Night shift",
    )


def test_a_docx_without_a_title_property_takes_its_first_heading() -> None:
    document = docx.Document()
    document.add_paragraph("Preface.")
    document.add_heading("Infection control", level=2)
    buffer = io.BytesIO()
    document.save(buffer)
    assert extract(buffer.getvalue(), "ic.docx").title == "Infection control"


def test_a_docx_zip_bomb_is_refused_before_it_is_inflated() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w") as member:
            for _ in range(extraction.MAX_DOCX_UNCOMPRESSED // 2**20 + 1):
                member.write(bytes(2**20))
    bomb = buffer.getvalue()
    assert len(bomb) < 2**20  # a few hundred kilobytes that would inflate past the limit
    with pytest.raises(PayloadTooLarge, match=r"^bomb\.docx: decompresses to \d+ bytes, more than"):
        extract(bomb, "bomb.docx")


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"plain words", "letter.docx: not a readable DOCX (not a zip file"),
        (zip_of({"word/document.xml": b"<w:document"}), "letter.docx: not a readable DOCX ("),
        (zip_of({"other.txt": b"x"}), "letter.docx: not a readable DOCX ("),
    ],
)
def test_an_unreadable_docx_is_refused_naming_the_file(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        extract(data, "letter.docx")
    assert refused.value.message.startswith(reason)


PAGE_HTML = """<!DOCTYPE html>
<html><head><title>  Visiting   hours </title>
<style>body { color: red }</style><script>var secret = "<p>not text</p>";</script></head>
<body><nav><ul><li>Home</li><li><p>About</p></li></ul></nav>
<h1>Visiting &amp; parking</h1>
<p>Open  from
   8&nbsp;am &ndash; 8 pm.<br>Closed on Mondays.</p>
<div>Level <b>3</b> for staff</div>
<h2>Rules</h2><noscript>Enable scripts</noscript>
<table><tr><th>Ward</th><th>Hours</th></tr><tr><td>A</td><td>9&#8211;5</td></tr></table>
<pre>line  one
  line two</pre>
<svg><title>icon</title><text>drawing</text></svg>
</body></html>"""


def test_html_keeps_its_block_structure_and_drops_what_is_not_text() -> None:
    document = extract(PAGE_HTML.encode(), "visit.html")
    assert document == Extracted(
        text=(
            "- Home\n\n- About\n\n# Visiting & parking\n\n"
            "Open from 8 am – 8 pm.\nClosed on Mondays.\n\nLevel 3 for staff\n\n## Rules\n\n"
            "Ward | Hours\n\nA | 9–5\n\nline  one\n  line two"
        ),
        media_type=HTML,
        title="Visiting hours",
    )


def test_deeply_nested_html_is_read_without_recursion() -> None:
    depth = 200_000
    data = ("<div>" * depth + "deep" + "</div>" * depth).encode()
    assert extract(data, "deep.htm").text == "deep"


def test_markdown_is_kept_as_written_and_titled_by_its_first_heading() -> None:
    text = "```\n# a comment in code\n```\n\n## Sepsis  ##\n\nGive fluids.\n\n# Later\n"
    document = extract(text.encode(), "guide.md")
    assert document == Extracted(text=text.strip(), media_type=MARKDOWN, title="Sepsis")
    assert [(h.level, h.title) for h in headings(document.text)] == [(2, "Sepsis"), (1, "Later")]
    first = next(headings(document.text))
    assert document.text[first.start : first.end] == "## Sepsis  ##"


def test_csv_rows_become_lines_of_column_value_pairs() -> None:
    data = (
        b'name,role,notes\r\nDr Okafor,surgeon,"on call, nights"\r\n'
        b'Nurse Lee,,"two\nlines"\r\n,,\r\nextra,x,y,z\r\n'
    )
    document = extract(data, "rota.csv")
    assert document.media_type == CSV
    assert document.text.splitlines() == [
        "name: Dr Okafor; role: surgeon; notes: on call, nights",
        "name: Nurse Lee; notes: two lines",
        "name: extra; role: x; notes: y; column 4: z",
    ]
    semicolons = extract(b"a;b\n1;2\n3;4\n", "eu.csv")
    assert semicolons.text == "a: 1; b: 2\na: 3; b: 4"
    assert extract(b"only,a,header\n", "h.csv").text == "only; a; header"


def test_a_csv_field_past_the_parser_limit_is_refused() -> None:
    data = b'a,b\n"' + b"x" * 200_000 + b'",1\n'
    with pytest.raises(InvalidRequest, match=r"^wide\.csv: not a readable CSV \(field larger"):
        extract(data, "wide.csv")


@pytest.mark.parametrize(
    "data",
    [
        "Café – “quoted”\r\nsecond line".encode(),
        b"\xef\xbb\xbf" + "Café – “quoted”\nsecond line".encode(),
        "Café – “quoted”\nsecond line".encode("utf-16"),
        "Café – “quoted”\rsecond line".encode("utf-32"),
        "Café – “quoted”\nsecond line".encode("cp1252"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16", "utf-32", "cp1252"],
)
def test_text_in_each_encoding_decodes_to_the_same_text(data: bytes) -> None:
    assert extract(data, "notes.txt") == Extracted("Café – “quoted”\nsecond line", TEXT)


def test_bytes_that_no_codec_defines_fall_back_to_latin_1() -> None:
    # 0x81 is undefined in cp1252; control characters other than tab and newline are dropped.
    assert extract(b"a\x81b\x07c\td", "odd.txt").text == "abc\td"


def test_text_holding_nul_bytes_is_refused() -> None:
    with pytest.raises(InvalidRequest, match=r"^blob\.txt: not text \(it holds NUL bytes"):
        extract(b"ab\x00\x00cd", "blob.txt")


@pytest.mark.parametrize(
    ("name", "media_type", "data", "kind"),
    [
        ("upload", None, pdf(["Sniffed."]), PDF),
        ("upload.bin", "application/octet-stream", word_document(), DOCX),
        ("upload", None, b"  <!doctype html><p>Hi</p>", HTML),
        ("upload", None, b"just words", TEXT),
        ("notes.log", "text/plain; charset=utf-8", b"just words", TEXT),
        ("readme", "text/x-markdown", b"# Read me", MARKDOWN),
        ("REPORT.PDF", None, pdf(["Upper-case extension."]), PDF),
    ],
)
def test_the_type_comes_from_the_extension_the_media_type_or_the_content(
    name: str, media_type: str | None, data: bytes, kind: str
) -> None:
    assert extract(data, name, media_type).media_type == kind


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("report.xlsx", zip_of({"xl/workbook.xml": b"<workbook/>"})),
        ("notes.log", b"words with an extension nobody supports"),
        ("upload", b"\x00\x01binary"),
        ("old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"),
    ],
)
def test_an_unsupported_type_is_refused_listing_the_supported_ones(name: str, data: bytes) -> None:
    with pytest.raises(InvalidRequest) as refused:
        extract(data, name)
    assert refused.value.message == (
        f"{name}: unsupported file type; supported: txt, md, html, pdf, docx, csv"
    )


def test_text_longer_than_max_characters_is_refused() -> None:
    assert extract(b"x" * 10, "ten.txt", max_characters=10).text == "x" * 10
    with pytest.raises(PayloadTooLarge, match=r"^eleven\.txt: its text is longer than 10"):
        extract(b"x" * 11, "eleven.txt", max_characters=10)
    with pytest.raises(PayloadTooLarge):
        extract(pdf(PAGES), "long.pdf", max_characters=100)
    with pytest.raises(PayloadTooLarge):
        extract(word_document(), "long.docx", max_characters=50)


@given(
    data=st.binary(max_size=300)
    | st.builds(lambda tail: b"%PDF-1.4\n" + tail, st.binary(max_size=300))
    | st.builds(lambda tail: b"PK\x03\x04" + tail, st.binary(max_size=300)),
    name=st.sampled_from(["f.txt", "f.md", "f.html", "f.pdf", "f.docx", "f.csv", "f"]),
)
def test_any_bytes_give_text_or_a_refusal_never_a_crash(data: bytes, name: str) -> None:
    try:
        document = extract(data, name)
    except (InvalidRequest, PayloadTooLarge) as refused:
        assert refused.message.startswith(f"{name}: ")
        return
    assert document.text == document.text.strip()
    assert "\r" not in document.text and "\x00" not in document.text
    assert all(isinstance(page, Page) for page in document.pages)
