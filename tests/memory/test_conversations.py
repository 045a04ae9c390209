"""Conversations on a real, migrated SQLite file and PostgreSQL: owners, search, history, export."""

from __future__ import annotations

import json

import pytest

from blackroad.errors import InvalidRequest, NotFound
from blackroad.memory.conversations import Conversations, fts_query, title_from
from blackroad.store.database import Database

ALICE, BOB = "alice", "bob"
ANSWER = {
    "role": "assistant",
    "content": "Pixel is a fine name for a cat.",
    "model": "smollm2:135m",
    "prompt_tokens": 21,
    "completion_tokens": 9,
    "ttft_ms": 12.5,
    "duration_ms": 80.0,
    "citations": [{"index": 1, "document": {"id": 3, "name": "cats.md"}}],
}


@pytest.fixture
def chats(database_on_both: Database) -> Conversations:
    return Conversations(database_on_both)


def test_a_conversation_takes_its_first_user_message_as_title_and_keeps_every_figure(
    chats: Conversations,
) -> None:
    created = chats.create(ALICE, model="smollm2:135m")
    assert created.title == "" and created.message_count == 0
    turn = {"role": "user", "content": "  My cat is called\n Pixel.  "}
    stored = chats.append(ALICE, created.id, [turn], ANSWER)
    assert [m.role for m in stored] == ["user", "assistant"]
    found = chats.get(ALICE, created.id)
    assert found.title == "My cat is called Pixel."
    assert found.message_count == 2
    answer = found.messages[-1] if found.messages else None
    assert answer is not None
    assert (answer.model, answer.prompt_tokens, answer.completion_tokens) == (
        "smollm2:135m", 21, 9,
    )  # fmt: skip
    assert (answer.ttft_ms, answer.duration_ms) == (12.5, 80.0)
    assert answer.citations == ANSWER["citations"]
    assert found.updated_at >= found.created_at


def test_a_long_first_message_gives_a_title_cut_at_a_word() -> None:
    title = title_from("word " * 100)
    assert len(title) <= 80 and title.endswith("…") and "wor…" not in title


def test_history_is_the_chat_messages_in_order(chats: Conversations) -> None:
    created = chats.create(ALICE, "Trip")
    chats.append(ALICE, created.id, [{"role": "user", "content": "one"}], ANSWER)
    chats.append(ALICE, created.id, [{"role": "user", "content": "two"}])
    assert chats.history(ALICE, created.id) == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": ANSWER["content"]},
        {"role": "user", "content": "two"},
    ]
    assert chats.get(ALICE, created.id).title == "Trip"  # a given title stays


def test_another_users_conversation_does_not_exist_for_them(chats: Conversations) -> None:
    mine = chats.create(ALICE, "Alice's secret plans")
    chats.append(ALICE, mine.id, [{"role": "user", "content": "the password is swordfish"}])
    for attempt in (
        lambda: chats.get(BOB, mine.id),
        lambda: chats.rename(BOB, mine.id, "mine now"),
        lambda: chats.delete(BOB, mine.id),
        lambda: chats.append(BOB, mine.id, [{"role": "user", "content": "hi"}]),
        lambda: chats.export(BOB, mine.id, "json"),
        lambda: chats.history(BOB, mine.id),
    ):
        with pytest.raises(NotFound) as refused:
            attempt()
        assert str(refused.value) == f"conversation {mine.id} not found"
    assert chats.list(BOB) == [] and chats.list(BOB, "swordfish") == []
    assert chats.get(ALICE, mine.id).title == "Alice's secret plans"
    assert chats.get(ALICE, mine.id).message_count == 1


def test_search_finds_words_in_titles_and_messages_latest_first(chats: Conversations) -> None:
    garden = chats.create(ALICE, "Garden", messages=[{"role": "user", "content": "Tomatoes!"}])
    cats = chats.create(ALICE, "Pets", messages=[{"role": "user", "content": "My cats purr"}])
    chats.create(BOB, "Bob's cats", messages=[{"role": "user", "content": "cats"}])
    assert [c.id for c in chats.list(ALICE)] == [cats.id, garden.id]
    hit = chats.list(ALICE, "cat")  # the porter stemmer: "cat" finds "cats"
    assert [c.id for c in hit] == [cats.id]
    assert hit[0].match == "My [cats] purr"
    assert [c.id for c in chats.list(ALICE, "garden")] == [garden.id]  # in the title
    assert hit[0].as_dict()["match"] and "messages" not in hit[0].as_dict()
    assert chats.list(ALICE, "cats tomatoes") == []  # every word must be found
    assert [c.id for c in chats.list(ALICE, limit=1, offset=1)] == [garden.id]


@pytest.mark.parametrize(
    "query",
    ['"', "cats OR", "NEAR(cats tomatoes)", "content:cats", "cat*", "-cats", "^cats", "'); --"],
)
def test_search_syntax_in_a_query_is_only_text(chats: Conversations, query: str) -> None:
    cats = chats.create(ALICE, "Pets", messages=[{"role": "user", "content": "cats OR dogs"}])
    found = chats.list(ALICE, query)  # never an FTS5 syntax error
    assert all(c.id == cats.id for c in found)


def test_fts_queries_quote_every_word() -> None:
    assert fts_query('cats" OR (dogs') == '"cats" "OR" "dogs"'
    assert fts_query("!!! ---") is None


def test_a_query_of_punctuation_finds_nothing(chats: Conversations) -> None:
    chats.create(ALICE, "Pets")
    assert chats.list(ALICE, "?!") == []
    assert len(chats.list(ALICE, "   ")) == 1  # blank: no search at all


def test_rename_and_delete(chats: Conversations) -> None:
    created = chats.create(ALICE, "Old")
    assert chats.rename(ALICE, created.id, "  New\tname ").title == "New name"
    with pytest.raises(InvalidRequest):
        chats.rename(ALICE, created.id, "   ")
    chats.append(ALICE, created.id, [{"role": "user", "content": "gone soon"}])
    chats.delete(ALICE, created.id)
    with pytest.raises(NotFound):
        chats.get(ALICE, created.id)
    assert chats.list(ALICE, "gone") == []  # its messages left the index too


def test_messages_must_have_a_role_and_text(chats: Conversations) -> None:
    created = chats.create(ALICE)
    with pytest.raises(InvalidRequest) as bad_role:
        chats.append(ALICE, created.id, [{"role": "wizard", "content": "hi"}])
    assert bad_role.value.param == "role"
    with pytest.raises(InvalidRequest) as bad_content:
        chats.append(ALICE, created.id, [{"role": "user", "content": [{"type": "image"}]}])
    assert bad_content.value.param == "content"
    assert chats.get(ALICE, created.id).message_count == 0  # nothing half-appended


def test_export_as_json_and_markdown(chats: Conversations) -> None:
    created = chats.create(ALICE)
    chats.append(ALICE, created.id, [{"role": "user", "content": "Name my cat"}], ANSWER)
    exported = json.loads(chats.export(ALICE, created.id, "json"))
    assert exported["title"] == "Name my cat"
    assert [m["content"] for m in exported["messages"]] == ["Name my cat", ANSWER["content"]]
    assert exported["messages"][1]["completion_tokens"] == 9
    markdown = chats.export(ALICE, created.id, "markdown")
    assert markdown.startswith("# Name my cat\n")
    assert "## User\n\nName my cat\n" in markdown
    assert f"## Assistant (smollm2:135m)\n\n{ANSWER['content']}\n" in markdown
    assert "cats.md" in markdown  # its citation
