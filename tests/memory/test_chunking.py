"""Chunking: its invariants over generated documents, and each of its rules on known ones."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blackroad.errors import InvalidRequest
from blackroad.memory.chunking import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_OVERLAP,
    Chunk,
    chunk,
    estimate_tokens,
)
from blackroad.memory.extract import CSV, MARKDOWN, TEXT, Extracted, extract, headings
from tests.support.documents import pdf

WORDS = st.one_of(
    st.sampled_from(["the", "ward", "Sepsis", "e.g.", "(see", "3.5", "mmol/L", "“Quoted.”"]),
    st.sampled_from(["end.", "Why?", "Stop!", "fluids,", "2024", "42"]),
    st.text("abcdefghijklmnopqrstuvwxyzé", min_size=1, max_size=40),
    st.text("病院の患者", min_size=1, max_size=12),
)
SPACES = st.sampled_from([" ", " ", "  ", "\t"])


@st.composite
def paragraphs(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        words = draw(st.lists(WORDS, min_size=1, max_size=30))
        lines.append("".join(word + draw(SPACES) for word in words).rstrip())
    return "\n".join(lines)


@st.composite
def documents(draw: st.DrawFn) -> Extracted:
    blocks = []
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 3)) == 0:
            title = " ".join(
                draw(
                    st.lists(st.sampled_from(["Sepsis", "Care", "Ward 4"]), min_size=1, max_size=3)
                )
            )
            blocks.append("#" * draw(st.integers(1, 3)) + " " + title)
        else:
            blocks.append(draw(paragraphs()))
    separators = st.sampled_from(["\n\n", "\n\n\n", "\n  \n"])
    text = "".join(block + draw(separators) for block in blocks).strip()
    return Extracted(text, draw(st.sampled_from([MARKDOWN, TEXT])))


def paragraph_spans(document: Extracted) -> list[tuple[int, int]]:
    """Each paragraph's (start, end): text between blank lines, headings apart."""
    text = document.text
    lines = [(h.start, h.end) for h in headings(text)] if document.media_type == MARKDOWN else []
    cuts = sorted([*lines, *((m.start(), m.end()) for m in re.finditer(r"\n\s*\n", text))])
    spans, position = [], 0
    for start, end in [*cuts, (len(text), len(text))]:
        if start >= position:
            piece = text[position:start]
            if piece.strip():
                left = position + len(piece) - len(piece.lstrip())
                spans.append((left, position + len(piece.rstrip())))
        position = max(position, end)
    return [span for span in spans if span not in lines]


def check_invariants(
    document: Extracted, chunks: list[Chunk], max_tokens: int, overlap: int
) -> None:
    text = document.text
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert c.text.strip() == c.text != ""
        assert c.tokens == estimate_tokens(c.text)
        # Over the limit only as one run of characters without whitespace, or as headings.
        assert (
            c.tokens <= max_tokens
            or not re.search(r"\s", c.text)
            or all(line.startswith("#") for line in c.text.split("\n") if line.strip())
        )
    for previous, following in itertools.pairwise(chunks):
        assert previous.start < following.start and previous.end < following.end
        if following.start < previous.end:
            assert following.heading == previous.heading
            assert estimate_tokens(text[following.start : previous.end]) <= overlap
    covered = bytearray(len(text))
    for c in chunks:
        covered[c.start : c.end] = b"\x01" * (c.end - c.start)
    assert all(covered[i] or character.isspace() for i, character in enumerate(text))


@settings(max_examples=300, deadline=None)
@given(document=documents(), max_tokens=st.integers(1, 80), data=st.data())
def test_chunks_are_spans_in_order_within_the_limit_covering_the_text(
    document: Extracted, max_tokens: int, data: st.DataObject
) -> None:
    overlap = data.draw(st.integers(0, max_tokens - 1))
    chunks = chunk(document, max_tokens, overlap)
    check_invariants(document, chunks, max_tokens, overlap)
    # A paragraph that fits is never cut: some chunk holds all of it.
    for start, end in paragraph_spans(document):
        if estimate_tokens(document.text[start:end]) <= max_tokens:
            assert any(c.start <= start and end <= c.end for c in chunks), (start, end)
    if document.media_type == MARKDOWN:
        # A chunk holds no text of two sections: before a heading line inside it, only headings.
        lines = list(headings(document.text))
        heading = bytearray(len(document.text))
        for line in lines:
            heading[line.start : line.end] = b"\x01" * (line.end - line.start)
        for c in chunks:
            for line in (line for line in lines if c.start < line.start < c.end):
                before = range(c.start, line.start)
                assert all(heading[i] or document.text[i].isspace() for i in before)


def test_the_defaults_fit_minilms_window() -> None:
    assert (DEFAULT_MAX_TOKENS, DEFAULT_OVERLAP) == (200, 40)
    assert estimate_tokens("The patient's lactate: 4.5 mmol/L.") == 13
    assert estimate_tokens("病院") == 2
    assert estimate_tokens("") == 0


def test_headings_start_chunks_and_name_their_path() -> None:
    text = (
        "Preamble.\n\n# Protocols\n\n## Sepsis\n\nGive fluids.\n\n### Lactate\n\nMeasure it.\n\n"
        "## Stroke\n\nCall the team.\n\n```\n# not a heading\n```\n\n# Annex"
    )
    chunks = chunk(Extracted(text, MARKDOWN), 50, 10)
    assert [(c.heading, c.text) for c in chunks] == [
        (None, "Preamble."),
        ("Protocols > Sepsis", "# Protocols\n\n## Sepsis\n\nGive fluids."),
        ("Protocols > Sepsis > Lactate", "### Lactate\n\nMeasure it."),
        ("Protocols > Stroke", "## Stroke\n\nCall the team.\n\n```\n# not a heading\n```"),
        ("Annex", "# Annex"),
    ]


def test_plain_text_has_no_headings() -> None:
    chunks = chunk(Extracted("# not a heading\n\nwords", TEXT), 50, 0)
    assert [(c.heading, c.text) for c in chunks] == [(None, "# not a heading\n\nwords")]


def test_paragraphs_are_packed_greedily_and_not_cut_when_they_fit() -> None:
    paragraphs = ["alpha " * 4, "beta " * 4, "gamma " * 4, "delta " * 9]
    text = "\n\n".join(p.strip() for p in paragraphs)
    packed = chunk(Extracted(text, TEXT), 12, 0)
    assert [c.text for c in packed] == [text[: text.index("delta")].strip(), paragraphs[3].strip()]
    spilled = chunk(Extracted(text, TEXT), 10, 0)
    assert [len(c.text.split()) for c in spilled] == [8, 4, 9]


def test_a_long_paragraph_is_cut_at_sentence_ends_then_between_words() -> None:
    sentences = [f"Sentence {n} has " + "several words " * 3 + "in it." for n in range(20)]
    text = " ".join(sentences)
    chunks = chunk(Extracted(text, TEXT), 40, 0)
    assert len(chunks) > 1
    assert all(c.text.startswith("Sentence") and c.text.endswith("in it.") for c in chunks)
    run_on = " ".join(["word"] * 100)
    assert [c.tokens for c in chunk(Extracted(run_on, TEXT), 30, 0)] == [30, 30, 30, 10]


def test_overlap_carries_the_previous_chunks_last_sentences() -> None:
    text = " ".join(f"Fact number {n} is true." for n in range(30))  # 6 tokens a sentence
    chunks = chunk(Extracted(text, TEXT), 30, 12)
    for previous, following in itertools.pairwise(chunks):
        carried = text[following.start : previous.end]
        assert carried and previous.text.endswith(carried)
        assert carried.startswith("Fact") and estimate_tokens(carried) == 12
        assert following.tokens <= 30


def test_overlap_gives_way_to_a_paragraph_that_fits_only_alone() -> None:
    first = " ".join(["one."] * 10)  # 20 tokens
    second = " ".join(["two"] * 28)
    chunks = chunk(Extracted(f"{first}\n\n{second}", TEXT), 30, 10)
    assert [c.tokens for c in chunks] == [20, 30]
    assert chunks[1].text == "one.\n\n" + second


def test_a_run_without_whitespace_longer_than_the_limit_is_a_chunk_of_its_own() -> None:
    blob = "x" * 500  # 72 tokens
    chunks = chunk(Extracted(f"before it\n\n{blob}\n\nafter it", TEXT), 20, 5)
    assert [c.text for c in chunks] == ["before it", blob, "after it"]


def test_csv_rows_are_never_cut() -> None:
    rows = "".join(f"{n},Patient {n},Ward {n % 4},stable and improving\n" for n in range(60))
    document = extract(("id,name,ward,status\n" + rows).encode(), "list.csv")
    assert document.media_type == CSV
    for overlap in (0, 25):  # a row is 20 tokens: the overlap is one row
        chunks = chunk(document, 60, overlap)
        check_invariants(document, chunks, 60, overlap)
        assert len(chunks) >= 20
        lines = set(document.text.splitlines())
        for c in chunks:
            assert set(c.text.splitlines()) <= lines


@pytest.mark.parametrize("words", [80, 3])
def test_each_chunk_of_a_pdf_lies_on_the_page_it_names(words: int) -> None:
    pages = [" ".join(f"Page{number} word{n}." for n in range(words)) for number in (1, 2, 3)]
    document = extract(pdf(pages), "three.pdf")
    chunks = chunk(document, 50, 10)
    check_invariants(document, chunks, 50, 10)
    assert {c.page for c in chunks} == {1, 2, 3}
    for c in chunks:
        assert all(word.startswith(f"Page{c.page}") for word in c.text.split()[::2])
        page = document.pages[c.page - 1] if c.page else None
        assert page and page.start <= c.start and c.end <= page.end


def test_a_real_tokenizer_can_count() -> None:
    def words(text: str) -> int:
        return len(text.split())

    text = " ".join(f"Item {n}, checked." for n in range(50))
    chunks = chunk(Extracted(text, TEXT), 16, 4, count=words)
    assert all(c.tokens == words(c.text) <= 16 for c in chunks)
    assert len(chunks) > len(text.split()) // 16


def test_cjk_text_without_spaces_is_cut_between_characters() -> None:
    text = "患者は病院に来た。" * 40
    chunks = chunk(Extracted(text, TEXT), 25, 5)
    check_invariants(Extracted(text, TEXT), chunks, 25, 5)
    assert all(c.text.endswith("。") for c in chunks)


def test_an_empty_document_has_no_chunks() -> None:
    assert chunk(Extracted("", TEXT)) == []


@pytest.mark.parametrize(
    ("max_tokens", "overlap", "param"),
    [(0, 0, "max_tokens"), (10, 10, "overlap"), (10, -1, "overlap")],
)
def test_limits_that_cannot_work_are_refused(max_tokens: int, overlap: int, param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        chunk(Extracted("words", TEXT), max_tokens, overlap)
    assert refused.value.param == param
