"""Cutting an extracted document into chunks to embed and search.

A chunk is a span of the document's text: ``chunk.text ==
document.text[chunk.start:chunk.end]``, trimmed of whitespace at both ends.
The rules, in order of precedence:

- A heading line (``#``-``######``, for the formats whose text marks headings:
  see ``extract.HEADED``) starts a new chunk: a section's chunks never hold the
  previous section's text. Consecutive headings with nothing between them
  share the chunk of the first text below them. A heading line is never cut;
  it opens its section's first chunk, and every chunk of the section names its
  heading path (``"Protocols > Sepsis"``).
- A page (of a paged format: PDF) starts a new chunk too, so a chunk's
  ``page`` is the page of all of its text and a citation never sends the
  reader to the wrong one; a paragraph running over a page break is cut there.
- A paragraph (text between blank lines) that fits in ``max_tokens`` is never
  cut; paragraphs are packed greedily. A longer paragraph is cut at line
  breaks (csv rows, list items, PDF lines); a line too long at sentence ends;
  a sentence too long between words. Of the allowed cuts, the strongest that
  fills at least half the chunk is taken (a paragraph end, then a line ending a
  sentence, a sentence end, a line end), so chunks end where the text pauses.
- A chunk after another in the same section starts with the previous chunk's
  last ``overlap`` tokens or fewer, from a sentence start where that keeps at
  least half of them, else from a word; fewer when the text that must follow
  would not fit otherwise.
- Only a single run of characters without whitespace longer than
  ``max_tokens``, or heading lines longer than that, make a chunk over it.

Tokens are counted per whitespace-separated piece (ideographs, kana and hangul
one piece per character, as they are written without spaces), and chunks are
packed by the sum of their pieces' counts; ``Chunk.tokens`` is the count of the
chunk's text (that same sum for the default count). The default,
:func:`estimate_tokens`, approximates the WordPiece tokenizer of
all-MiniLM-L6-v2, whose window is 256 tokens, erring high: on English prose and
technical docs its chunks of 200 held 231 real tokens at most. Hence the
defaults, 200 with 40 of overlap. A real tokenizer can be passed as ``count``;
it must not add special tokens (``[CLS]``, ``<s>``).

Everything is linear in the text's length.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from blackroad.errors import InvalidRequest
from blackroad.memory.extract import HEADED, Extracted, headings

DEFAULT_MAX_TOKENS = 200
DEFAULT_OVERLAP = 40


@dataclass(frozen=True)
class Chunk:
    """One chunk: ``text`` is the document's ``text[start:end]``; ``page`` is 1-based."""

    ordinal: int
    text: str
    start: int
    end: int
    page: int | None
    heading: str | None
    tokens: int


_CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f"
_PIECE = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")
_SUBWORD = re.compile(r"[^\W\d_]+|\d+|\S")
_NON_SPACE = re.compile(r"\S")


def estimate_tokens(text: str) -> int:
    """About how many WordPiece tokens ``text`` is (all-MiniLM-L6-v2's vocabulary)."""
    return sum(_piece_tokens(piece) for piece in _PIECE.findall(text))


@functools.lru_cache(maxsize=1 << 16)
def _piece_tokens(piece: str) -> int:
    """Letters, digits and each punctuation mark are tokens; long runs are split into several."""
    if len(piece) == 1:
        return 1
    tokens = 0
    for part in _SUBWORD.findall(piece):
        length = len(part)
        if length == 1:
            tokens += 1
        elif part.isdigit():
            tokens += 1 + (length - 1) // 3
        elif max(part) < "\u0250":  # Latin, whose accents the tokenizer strips
            tokens += 1 + (length - 1) // 7
        else:
            tokens += 1 + (length - 1) // 2
    return tokens


def chunk(
    document: Extracted,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap: int = DEFAULT_OVERLAP,
    count: Callable[[str], int] | None = None,
) -> list[Chunk]:
    """``document`` cut into chunks of at most ``max_tokens`` tokens (see the module's rules)."""
    if max_tokens < 1:
        raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
    if not 0 <= overlap < max_tokens:
        raise InvalidRequest("overlap must be at least 0 and below max_tokens", param="overlap")
    measure = _piece_tokens if count is None else functools.cache(count)
    page_starts = [page.start for page in document.pages]
    chunks: list[Chunk] = []
    for section in _paged(_sections(document), document):
        for start, end, tokens in _Cutter(document.text, section, measure).cut(max_tokens, overlap):
            text = document.text[start:end]
            page = None
            if page_starts:
                page = document.pages[max(0, bisect.bisect_right(page_starts, start) - 1)].number
            chunks.append(
                Chunk(
                    ordinal=len(chunks),
                    text=text,
                    start=start,
                    end=end,
                    page=page,
                    heading=section.heading,
                    tokens=tokens if count is None else count(text),
                )
            )
    return chunks


@dataclass(frozen=True)
class _Section:
    """``text[start:end]``, whose heading lines end at ``body``, under ``heading``."""

    start: int
    end: int
    body: int
    heading: str | None


def _sections(document: Extracted) -> list[_Section]:
    text = document.text
    if document.media_type not in HEADED:
        return [_Section(0, len(text), 0, None)]
    sections = []
    start = body = 0
    heading: str | None = None
    path: list[tuple[int, str]] = []
    for line in headings(text):
        if _NON_SPACE.search(text, body, line.start):
            sections.append(_Section(start, line.start, body, heading))
            start = line.start
        while path and path[-1][0] >= line.level:
            path.pop()
        path.append((line.level, line.title))
        heading = " > ".join(title for _, title in path)
        body = line.end
    sections.append(_Section(start, len(text), body, heading))
    return sections


def _paged(sections: list[_Section], document: Extracted) -> list[_Section]:
    """``sections`` cut where a page begins, so that all of a chunk is on its page.

    A citation names the page of its passage; a chunk running on to the next
    page would send the reader to the wrong one for part of it.
    """
    paged = []
    for section in sections:
        start, body = section.start, section.body
        for page in document.pages:
            if max(start, body) < page.start < section.end:
                paged.append(_Section(start, page.start, body, section.heading))
                start = body = page.start
        paged.append(_Section(start, section.end, body, section.heading))
    return paged


# The kinds of boundary between two pieces, weakest first: the order in which a cut
# prefers them. _NONE (inside a section's heading lines) is never cut.
_NONE, _HEADING, _WORD, _LINE, _SENTENCE, _LINE_SENTENCE, _PARAGRAPH, _END = range(8)
_TERMINALS = frozenset(".!?…。！？")
_CLOSERS = "\"')]»”’"
# A chunk may end inside a sentence, a line or a paragraph only if that unit is too long:
# for each, the kinds of boundary that end it and those inside it.
_UNITS = (
    (frozenset({_SENTENCE, _LINE, _LINE_SENTENCE, _PARAGRAPH, _HEADING, _END}), frozenset({_WORD})),
    (frozenset({_LINE, _LINE_SENTENCE, _PARAGRAPH, _HEADING, _END}), frozenset({_SENTENCE})),
    (frozenset({_PARAGRAPH, _HEADING, _END}), frozenset({_LINE, _LINE_SENTENCE})),
)


def _ends_sentence(piece: str) -> bool:
    return piece.rstrip(_CLOSERS)[-1:] in _TERMINALS


class _Cutter:
    """The pieces of one section, the kinds of boundary between them, and the cuts."""

    def __init__(self, text: str, section: _Section, measure: Callable[[str], int]) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.kinds: list[int] = []  # kinds[k]: the boundary before piece k
        self.totals = [0]  # totals[k]: the tokens of pieces 0..k-1
        previous = ""
        for match in _PIECE.finditer(text, section.start, section.end):
            start, end = match.span()
            piece = match.group()
            self.kinds.append(self._kind(text, section, previous, piece, start))
            self.starts.append(start)
            self.ends.append(end)
            self.totals.append(self.totals[-1] + measure(piece))
            previous = piece
        self.kinds.append(_END)

    def _kind(self, text: str, section: _Section, previous: str, piece: str, start: int) -> int:
        if not self.starts or start < section.body:
            return _NONE
        if self.ends[-1] <= section.body:
            return _HEADING
        newlines = text.count("\n", self.ends[-1], start)
        if newlines > 1:
            return _PARAGRAPH
        if newlines:
            return _LINE_SENTENCE if _ends_sentence(previous) else _LINE
        if _ends_sentence(previous) and not piece[0].islower():
            return _SENTENCE
        return _WORD

    def cut(self, max_tokens: int, overlap: int) -> Iterator[tuple[int, int, int]]:
        """Each chunk as (its first character, past its last, its tokens)."""
        count = len(self.starts)
        cuttable = self._cuttable(max_tokens)
        totals = self.totals
        first = start = 0  # a chunk holds pieces first..end-1; start..end-1 are its own
        previous: tuple[int, int] | None = None
        while start < count:
            end = self._best_end(cuttable, start, max_tokens - (totals[start] - totals[first]))
            if end is None:
                # What must come next does not fit after the overlap: less overlap.
                end = cuttable.index(True, start + 1)
                room = min(overlap, max_tokens - (totals[end] - totals[start]))
                first = self._overlap(*previous, room) if previous else start
            yield self.starts[first], self.ends[end - 1], totals[end] - totals[first]
            previous = start, end
            first = self._overlap(start, end, overlap)
            start = end

    def _cuttable(self, max_tokens: int) -> list[bool]:
        """For each piece, whether a chunk may end at the boundary before it."""
        kinds, totals = self.kinds, self.totals
        cuttable = [kind in (_HEADING, _PARAGRAPH, _END) for kind in kinds]
        for unit_ends, inside in _UNITS:
            first = 0
            for end in range(1, len(kinds)):
                if kinds[end] in unit_ends:
                    if totals[end] - totals[first] > max_tokens:
                        for k in range(first + 1, end):
                            cuttable[k] = cuttable[k] or kinds[k] in inside
                    first = end
        return cuttable

    def _best_end(self, cuttable: list[bool], start: int, budget: int) -> int | None:
        """The best end for a chunk from piece ``start`` within ``budget`` tokens, if any."""
        totals, kinds = self.totals, self.kinds
        best: int | None = None
        best_key = (False, _NONE, 0)
        end = start + 1
        while end < len(totals) and totals[end] - totals[start] <= budget:
            if cuttable[end]:
                key = (2 * (totals[end] - totals[start]) >= budget, kinds[end], end)
                if key > best_key:
                    best, best_key = end, key
            end += 1
        return best

    def _overlap(self, start: int, end: int, budget: int) -> int:
        """Where the next chunk starts within pieces start..end-1: ``end`` for no overlap."""
        best, best_key = end, (False, _NONE, 0)
        tokens = 0
        for first in range(end - 1, start, -1):
            tokens += self.totals[first + 1] - self.totals[first]
            if tokens > budget:
                break
            key = (2 * tokens >= budget, self.kinds[first], tokens)
            if self.kinds[first] != _NONE and key > best_key:
                best, best_key = first, key
        return best
