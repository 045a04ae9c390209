"""Text from an uploaded document's bytes: txt, md, html, pdf, docx and csv.

Owns the text form of a document that a knowledge base chunks and indexes:

- one ``str`` for the whole document, newlines normalized to ``\\n``, control
  characters dropped, paragraphs separated by a blank line;
- headings kept visible as markdown ATX lines (``# Title``, ``## Section``) for
  the formats that have them (markdown as written, html ``<h1>``-``<h6>``, docx
  heading styles), which :func:`headings` finds again for the chunker;
- pages (PDF only) as character ranges of that text; other formats have none;
- html list items as ``- item`` lines, table rows (html, docx) as cells joined
  by `` | ``, csv rows as ``column: value; column: value`` lines.

Hostile files are refused, never trusted: a docx whose zip has more than
``MAX_DOCX_PARTS`` members, would decompress past ``MAX_DOCX_UNCOMPRESSED``, or
has a member that inflates more than ``MAX_DOCX_RATIO`` times (a zip bomb), a
PDF with more than ``MAX_PDF_PAGES`` pages, a text longer than
``max_characters`` (all ``PayloadTooLarge``); anything unreadable is an
``InvalidRequest`` naming the file. What no check up front can bound (pypdf's
and python-docx's work on a crafted file, the quadratic cases of Python 3.11's
``HTMLParser``, CVE-2025-6069) is bounded by where it runs: ``extracted``
reads a document in a helper process of ``blackroad.bounded``, within
``Bounds.extract_seconds`` and the helper's memory, its text sent back as bytes
of at most 4 bytes per allowed character.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from itertools import zip_longest
from pathlib import PurePath
from typing import Any

import docx
import pypdf
from docx.styles.style import ParagraphStyle
from docx.table import Table
from docx.text.paragraph import Paragraph

from blackroad import bounded
from blackroad.errors import InvalidRequest, PayloadTooLarge

TEXT = "text/plain"
MARKDOWN = "text/markdown"
HTML = "text/html"
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
CSV = "text/csv"
# The media types whose text marks headings as markdown lines.
HEADED = frozenset({MARKDOWN, HTML, DOCX})

MAX_CHARACTERS = 10_000_000  # about 5,000 pages of prose
MAX_PDF_PAGES = 5_000
MAX_DOCX_UNCOMPRESSED = 128 * 1024 * 1024
MAX_DOCX_PARTS = 4_096
# Word's XML deflates 5-20 times; deflate can reach about 1,000 (a bomb's ratio).
MAX_DOCX_RATIO = 200

SUPPORTED = "txt, md, html, pdf, docx, csv"
_EXTENSIONS = {
    ".txt": TEXT,
    ".text": TEXT,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".html": HTML,
    ".htm": HTML,
    ".pdf": PDF,
    ".docx": DOCX,
    ".csv": CSV,
}
_MEDIA_TYPES = {
    TEXT: TEXT,
    MARKDOWN: MARKDOWN,
    "text/x-markdown": MARKDOWN,
    HTML: HTML,
    "application/xhtml+xml": HTML,
    PDF: PDF,
    DOCX: DOCX,
    CSV: CSV,
}


@dataclass(frozen=True)
class Page:
    """Page ``number`` (1-based) is ``Extracted.text[start:end]``, empty if it has no text."""

    number: int
    start: int
    end: int


@dataclass(frozen=True)
class Extracted:
    """A document's text. ``pages`` is empty for formats without pages (all but PDF)."""

    text: str
    media_type: str
    pages: tuple[Page, ...] = ()
    title: str | None = None


@dataclass(frozen=True)
class Heading:
    """A markdown ATX heading line of a text: ``text[start:end]`` is the whole line."""

    level: int
    title: str
    start: int
    end: int


_HEADING_OR_FENCE = re.compile(
    r"^ {0,3}(?:(?P<hashes>#{1,6})[ \t]+(?P<title>.*?)(?:[ \t]+#+)?[ \t]*"
    r"|(?P<fence>`{3,}|~{3,})(?P<info>.*))$",
    re.MULTILINE,
)


def headings(text: str) -> Iterator[Heading]:
    """The ATX heading lines of ``text``, in order; lines inside code fences are not headings."""
    fence: str | None = None
    for match in _HEADING_OR_FENCE.finditer(text):
        marker = match["fence"]
        if marker is not None:
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence) and not match["info"].strip():
                fence = None
        elif fence is None and match["title"]:
            yield Heading(len(match["hashes"]), match["title"], match.start(), match.end())


async def extracted(
    data: bytes,
    filename: str,
    media_type: str | None = None,
    *,
    max_characters: int = MAX_CHARACTERS,
) -> Extracted:
    """``extract`` in a helper process, bounded in time, memory and output; for the event loop."""
    work = bounded.pool("documents")
    answer = await work.run(
        EXTRACT_TASK,
        {"filename": filename, "media_type": media_type, "max_characters": max_characters},
        data,
        seconds=work.bounds.extract_seconds,
        output_bytes=4 * max_characters,  # UTF-8
        what=f"reading the text of {filename}",
        param="file",
    )
    header = answer.value if isinstance(answer, bounded.Blob) else answer
    text = answer.data.decode() if isinstance(answer, bounded.Blob) else ""
    return Extracted(
        text=text,
        media_type=header["media_type"],
        pages=tuple(Page(*page) for page in header["pages"]),
        title=header["title"],
    )


EXTRACT_TASK = f"{__name__}:extract_task"


def extract_task(args: dict[str, Any], data: bytes) -> bounded.Blob:
    """A helper's side of ``extracted``: the text as bytes, the rest as JSON."""
    found = extract(data, args["filename"], args["media_type"],
                    max_characters=args["max_characters"])  # fmt: skip
    pages = [(page.number, page.start, page.end) for page in found.pages]
    header = {"media_type": found.media_type, "pages": pages, "title": found.title}
    return bounded.Blob(header, found.text.encode())


def extract(
    data: bytes,
    filename: str,
    media_type: str | None = None,
    *,
    max_characters: int = MAX_CHARACTERS,
) -> Extracted:
    """The text of the file ``filename`` whose bytes are ``data``.

    The type comes from the file's extension; failing that from ``media_type``
    (its parameters, such as ``charset``, are ignored: text is decoded as UTF-8,
    UTF-16/32 with a byte-order mark, else Windows-1252); failing that from the
    content (``%PDF-``, a zip holding ``word/document.xml``, ``<html``, and for
    a name without an extension, text). The title is the format's own (html
    ``<title>``, docx core properties, PDF metadata), else the first heading.
    """
    kind = _detect(data, filename, media_type)
    text, pages, title = _READERS[kind](data, filename, max_characters)
    if len(text) > max_characters:
        raise _too_long(filename, max_characters)
    if title is None and kind in HEADED:
        title = next((heading.title for heading in headings(text)), None)
    return Extracted(text=text, media_type=kind, pages=pages, title=title)


def _detect(data: bytes, filename: str, media_type: str | None) -> str:
    extension = PurePath(filename).suffix.lower()
    if extension in _EXTENSIONS:
        return _EXTENSIONS[extension]
    declared = (media_type or "").split(";")[0].strip().lower()
    if declared in _MEDIA_TYPES:
        return _MEDIA_TYPES[declared]
    if b"%PDF-" in data[:1024]:
        return PDF
    if data.startswith(b"PK\x03\x04"):
        if _is_docx(data):
            return DOCX
    else:
        opening = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
        if opening.startswith((b"<!doctype html", b"<html")):
            return HTML
        if not extension and b"\x00" not in data[:4096]:
            return TEXT
    raise InvalidRequest(f"{filename}: unsupported file type; supported: {SUPPORTED}", param="file")


# What zipfile raises on a damaged archive: BadZipFile, and others for a truncated
# file (EOFError, OSError), a member name flagged UTF-8 that is not (ValueError), a
# member of a later zip version or compression (NotImplementedError), an encrypted
# member (RuntimeError).
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError)


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except _ZIP_ERRORS:
        return False


def _check_zip(archive: zipfile.ZipFile, filename: str) -> None:
    """Refuse a zip bomb before anything is inflated.

    Reading a member stops at its declared size (and a larger one fails its
    CRC), so the declared sizes bound what python-docx can inflate.
    """
    members = archive.infolist()
    if len(members) > MAX_DOCX_PARTS:
        raise PayloadTooLarge(f"{filename}: {len(members)} parts, more than {MAX_DOCX_PARTS}")
    inflated = sum(member.file_size for member in members)
    if inflated > MAX_DOCX_UNCOMPRESSED:
        raise PayloadTooLarge(
            f"{filename}: decompresses to {inflated} bytes, more than {MAX_DOCX_UNCOMPRESSED}"
        )
    for member in members:
        ratio = member.file_size // max(member.compress_size, 1)
        # Small parts may compress by any ratio harmlessly; a large one must look like XML.
        if member.file_size > (1 << 20) and ratio > MAX_DOCX_RATIO:
            raise PayloadTooLarge(
                f"{filename}: its part {member.filename[:100]} inflates {ratio} times, more "
                f"than {MAX_DOCX_RATIO} (a zip bomb)"
            )


def _too_long(filename: str, max_characters: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"{filename}: its text is longer than {max_characters} characters")


def _unreadable(filename: str, kind: str, reason: str) -> InvalidRequest:
    return InvalidRequest(f"{filename}: not a readable {kind} ({reason})", param="file")


def _reason(error: Exception) -> str:
    return (str(error) or type(error).__name__)[:200]


# C0 and C1 control characters are dropped, except tab and the line breaks.
_CONTROLS: dict[int, str | None] = dict.fromkeys((*range(0x20), *range(0x7F, 0xA0)))
_CONTROLS |= {0x09: "\t", 0x0A: "\n", 0x0B: "\n", 0x0C: "\n", 0x0D: "\n"}


def _clean(text: str) -> str:
    """``text`` with ``\\n`` line breaks only, no control characters, no edge whitespace."""
    return text.replace("\r\n", "\n").translate(_CONTROLS).strip()


def _decode(data: bytes, filename: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        text = data[3:].decode("utf-8", errors="replace")
    elif data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        text = data.decode("utf-32", errors="replace")
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:  # the five bytes cp1252 leaves undefined
                text = data.decode("latin-1")
        if "\x00" in text:
            raise InvalidRequest(
                f"{filename}: not text (it holds NUL bytes; UTF-16 needs a byte-order mark)",
                param="file",
            )
    return _clean(text)


Read = tuple[str, tuple[Page, ...], str | None]


def _read_text(data: bytes, filename: str, max_characters: int) -> Read:
    return _decode(data, filename), (), None


def _read_csv(data: bytes, filename: str, max_characters: int) -> Read:
    """Each row as ``column: value; column: value`` on a line of its own, empty values left out."""
    text = _decode(data, filename)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(
            text[:8192], delimiters=",;\t|"
        )
    except csv.Error:  # one column, or too irregular to tell: the default
        dialect = csv.excel
    try:
        rows = list(csv.reader(io.StringIO(text), dialect))
    except csv.Error as error:
        raise _unreadable(filename, "CSV", _reason(error)) from error
    if not rows:
        return "", (), None
    header = [cell.strip() or f"column {n}" for n, cell in enumerate(rows[0], 1)]
    if len(rows) == 1:
        return "; ".join(header), (), None
    lines = []
    for row in rows[1:]:
        cells = (
            f"{name or f'column {n}'}: {' '.join(value.split())}"
            for n, (name, value) in enumerate(zip_longest(header, row, fillvalue=""), 1)
            if value.strip()
        )
        line = "; ".join(cells)
        if line:
            lines.append(line)
    return "\n".join(lines), (), None


def _read_pdf(data: bytes, filename: str, max_characters: int) -> Read:
    """Each page's text, pages separated by a blank line; a PDF without any text is refused."""
    if b"%PDF-" not in data[:1024]:
        raise _unreadable(filename, "PDF", "no %PDF- header")
    # pypdf raises many kinds of exception on malformed files (its own, and
    # KeyError, ValueError, TypeError... from deep inside): each means unreadable.
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == pypdf.PasswordType.NOT_DECRYPTED:
            raise _unreadable(filename, "PDF", "it is encrypted with a password")
        count = len(reader.pages)
    except InvalidRequest:
        raise
    except Exception as error:
        raise _unreadable(filename, "PDF", _reason(error)) from error
    if count > MAX_PDF_PAGES:
        raise PayloadTooLarge(f"{filename}: {count} pages, more than {MAX_PDF_PAGES}")
    parts: list[str] = []
    pages: list[Page] = []
    length = 0
    for number, page in enumerate(reader.pages, 1):
        try:
            text = _clean(page.extract_text())
        except Exception as error:
            raise _unreadable(filename, "PDF", f"page {number}: {_reason(error)}") from error
        if text and length:
            parts.append("\n\n")
            length += 2
        pages.append(Page(number, length, length + len(text)))
        parts.append(text)
        length += len(text)
        if length > max_characters:
            raise _too_long(filename, max_characters)
    if not length:
        raise InvalidRequest(
            f"{filename}: the PDF has no text to extract (scanned pages would need OCR)",
            param="file",
        )
    return "".join(parts), tuple(pages), _pdf_title(reader)


def _pdf_title(reader: pypdf.PdfReader) -> str | None:
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:  # a damaged info dictionary costs the title, not the document
        return None
    if not isinstance(title, str):  # the info dictionary may hold a number or a dictionary
        return None
    return " ".join(title.split()) or None


def _read_docx(data: bytes, filename: str, max_characters: int) -> Read:
    """Paragraphs and table rows in document order; heading styles become ``#`` lines."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            _check_zip(archive, filename)
    except _ZIP_ERRORS as error:
        raise _unreadable(filename, "DOCX", f"not a zip file: {_reason(error)}") from error
    # python-docx and lxml raise many kinds of exception on a damaged package.
    try:
        document = docx.Document(io.BytesIO(data))
        blocks: list[str] = []
        length = 0
        for item in document.iter_inner_content():
            block = _table_text(item) if isinstance(item, Table) else _paragraph_text(item)
            if block:
                blocks.append(block)
                length += len(block) + 2
                if length > max_characters:
                    raise _too_long(filename, max_characters)
        title = " ".join((document.core_properties.title or "").split()) or None
    except PayloadTooLarge:
        raise
    except Exception as error:
        raise _unreadable(filename, "DOCX", _reason(error)) from error
    return _clean("\n\n".join(blocks)), (), title


_HEADING_STYLE = re.compile(r"Heading ([1-9])")


def _paragraph_text(paragraph: Paragraph) -> str:
    text = _clean(paragraph.text)
    if not text:
        return ""
    style: ParagraphStyle | None = paragraph.style
    while style is not None:
        name = style.name or ""
        heading = _HEADING_STYLE.fullmatch(name)
        if heading or name == "Title":
            level = min(int(heading[1]), 6) if heading else 1
            return "#" * level + " " + " ".join(text.split())
        if name.startswith("List"):
            return "- " + text
        style = style.base_style
    return text


def _table_text(table: Table) -> str:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            # A merged cell appears once per grid column it spans.
            if text and (not cells or cells[-1] != text):
                cells.append(text)
        if cells:
            rows.append(" | ".join(cells))
    return "\n".join(rows)


# Words, not one string per line: the tag lists stay readable at a glance.
_BLOCK_TAGS = frozenset(
    "address article aside blockquote body caption dd details dialog div dl dt fieldset "  # noqa: SIM905
    "figcaption figure footer form header hgroup hr html legend main nav ol p section "
    "summary table tbody tfoot thead tr ul".split()
)
_SKIPPED_TAGS = frozenset("script style noscript template svg math iframe object".split())  # noqa: SIM905
_HEADING_TAGS = {f"h{level}": level for level in range(1, 7)}
_SPACES = re.compile(r"\s+")


class _HTMLText(HTMLParser):
    """Blocks of text from html: headings as ``#`` lines, list items as ``- `` lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.title: str | None = None
        self._inline: list[str] = []
        self._prefix = ""  # "## " in a heading, "- " in a list item
        self._heading = False
        self._pre = 0
        self._skipped = 0
        self._title_parts: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipped += 1
        elif tag == "title" and self.title is None and not self._skipped:
            self._title_parts = []
        elif tag in _HEADING_TAGS:
            self._flush()
            self._prefix, self._heading = "#" * _HEADING_TAGS[tag] + " ", True
        elif tag == "li":
            self._flush()
            self._prefix = "- "
        elif tag == "pre":
            self._flush()
            self._pre += 1
        elif tag in _BLOCK_TAGS:
            self._flush()
        elif tag == "br":
            self._inline.append("\n")
        elif tag in ("td", "th") and "".join(self._inline).strip():
            self._inline.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipped = max(0, self._skipped - 1)
        elif tag == "title" and self._title_parts is not None:
            self.title = " ".join("".join(self._title_parts).split()) or None
            self._title_parts = None
        elif tag in _HEADING_TAGS or tag == "li":
            self._flush()
            self._prefix, self._heading = "", False
        elif tag == "pre":
            self._flush()
            self._pre = max(0, self._pre - 1)
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._title_parts is not None:
            self._title_parts.append(data)
        elif not self._skipped:
            self._inline.append(data if self._pre else _SPACES.sub(" ", data))

    def close(self) -> None:
        super().close()
        self._flush()

    def _flush(self) -> None:
        """Ends the block being read: its text, if any, becomes one of ``blocks``."""
        raw = "".join(self._inline)
        self._inline.clear()
        if self._pre:
            text = "\n".join(line.rstrip() for line in raw.split("\n")).strip("\n")
        else:
            lines = (" ".join(line.split()) for line in raw.split("\n"))
            text = (" " if self._heading else "\n").join(line for line in lines if line)
        if text.strip():
            self.blocks.append(self._prefix + text)
            self._prefix = ""


def _read_html(data: bytes, filename: str, max_characters: int) -> Read:
    parser = _HTMLText()
    try:
        parser.feed(_decode(data, filename))
        parser.close()
    except AssertionError as error:  # how 3.11's parser refuses a marked section it does not know
        raise _unreadable(filename, "HTML", _reason(error)) from error
    return _clean("\n\n".join(parser.blocks)), (), parser.title


_READERS: dict[str, Callable[[bytes, str, int], Read]] = {
    TEXT: _read_text,
    MARKDOWN: _read_text,
    HTML: _read_html,
    PDF: _read_pdf,
    DOCX: _read_docx,
    CSV: _read_csv,
}
