"""Long-term memories on a real, migrated SQLite file and PostgreSQL: versions, owners, recall."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import func, select

from blackroad.errors import EngineError, InvalidRequest, NotFound
from blackroad.memory.conversations import Conversation, Conversations, Message
from blackroad.memory.facts import (
    EXTRACT_CHARS,
    MemoryStore,
    memory_context,
    parse_facts,
    transcript,
)
from blackroad.store.database import Database
from blackroad.store.schema import memory_versions

ALICE, BOB = "alice", "bob"
MODEL = "test-embedder"


def unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


@pytest.fixture
def store(database_on_both: Database) -> MemoryStore:
    return MemoryStore(database_on_both)


def test_every_edit_is_a_version_with_who_and_when(store: MemoryStore) -> None:
    added = store.add(ALICE, "  Lives in Lisbon ", embedding=unit(1, 0), embedding_model=MODEL)
    assert (added.text, added.source, added.version) == ("Lives in Lisbon", "user", 1)
    edited = store.edit(ALICE, added.id, "Lives in Porto", changed_by=ALICE)
    store.edit(ALICE, added.id, "Lives in Porto since 2024", changed_by="admin")
    assert edited.version == 2 and edited.embedding_model is None  # the old vector is gone
    history = store.history(ALICE, added.id)
    assert [(v.version, v.text, v.changed_by) for v in history] == [
        (1, "Lives in Lisbon", ALICE),
        (2, "Lives in Porto", ALICE),
        (3, "Lives in Porto since 2024", "admin"),
    ]
    assert history[0].changed_at <= history[2].changed_at
    assert store.get(ALICE, added.id).version == 3


def test_another_users_memory_does_not_exist_for_them(store: MemoryStore) -> None:
    mine = store.add(ALICE, "Allergic to peanuts", embedding=unit(1, 0), embedding_model=MODEL)
    for attempt in (
        lambda: store.get(BOB, mine.id),
        lambda: store.edit(BOB, mine.id, "not any more", changed_by=BOB),
        lambda: store.delete(BOB, mine.id),
        lambda: store.history(BOB, mine.id),
    ):
        with pytest.raises(NotFound) as refused:
            attempt()
        assert str(refused.value) == f"memory {mine.id} not found"
    assert store.list(BOB) == []
    assert store.recall(BOB, unit(1, 0), 5, MODEL) == []
    assert store.get(ALICE, mine.id).text == "Allergic to peanuts"
    assert len(store.history(ALICE, mine.id)) == 1


def test_recall_ranks_by_cosine_among_the_same_models_vectors(store: MemoryStore) -> None:
    cat = store.add(ALICE, "Has a cat", embedding=unit(1, 0, 0), embedding_model=MODEL)
    city = store.add(ALICE, "Lives in Lisbon", embedding=unit(0, 1, 0), embedding_model=MODEL)
    store.add(ALICE, "Other model", embedding=unit(1, 0, 0), embedding_model="another")
    store.add(ALICE, "Other width", embedding=unit(1, 0), embedding_model=MODEL)
    store.add(ALICE, "Not embedded")
    store.add(BOB, "Bob's cat", embedding=unit(1, 0, 0), embedding_model=MODEL)
    found = store.recall(ALICE, unit(0.9, 0.1, 0), 5, MODEL)
    assert [m.id for m in found] == [cat.id, city.id]
    assert found[0].similarity == pytest.approx(unit(0.9, 0.1)[0], abs=1e-6)
    assert found[0].as_dict()["similarity"] > found[1].as_dict()["similarity"]
    assert [m.id for m in store.recall(ALICE, unit(0, 1, 0), 1, MODEL)] == [city.id]
    stale = {m.text for m in store.unembedded(ALICE, MODEL, 3)}
    assert stale == {"Other model", "Other width", "Not embedded"}


def test_embeddings_set_later_skip_a_memory_edited_meanwhile(store: MemoryStore) -> None:
    added = store.add(ALICE, "Likes tea")
    [read] = store.unembedded(ALICE, MODEL, 2)
    store.edit(ALICE, added.id, "Likes coffee", changed_by=ALICE)
    store.set_embeddings(ALICE, [(read, unit(1, 0))], MODEL)  # the vector of "Likes tea"
    assert store.recall(ALICE, unit(1, 0), 5, MODEL) == []
    [fresh] = store.unembedded(ALICE, MODEL, 2)
    store.set_embeddings(ALICE, [(fresh, unit(1, 0))], MODEL)
    assert [m.text for m in store.recall(ALICE, unit(1, 0), 5, MODEL)] == ["Likes coffee"]


def test_extracted_memories_name_their_conversation(store: MemoryStore) -> None:
    chats = Conversations(store.database)
    alices = chats.create(ALICE, "Intro")
    bobs = chats.create(BOB, "Bob's")
    [fact] = store.add_many(ALICE, [("Is called Ada", None)], "extracted", alices.id, MODEL)
    assert (fact.source, fact.conversation_id) == ("extracted", alices.id)
    with pytest.raises(NotFound):  # not another user's conversation
        store.add(ALICE, "Stolen", "extracted", bobs.id)
    chats.delete(ALICE, alices.id)
    kept = store.get(ALICE, fact.id)  # the memory stays, unlinked
    assert kept.conversation_id is None and kept.text == "Is called Ada"


def test_delete_takes_the_history_too(store: MemoryStore) -> None:
    added = store.add(ALICE, "Temporary")
    store.edit(ALICE, added.id, "Temporary, edited", changed_by=ALICE)
    store.delete(ALICE, added.id)
    with pytest.raises(NotFound):
        store.get(ALICE, added.id)
    versions = memory_versions.c
    with store.database.engine.connect() as connection:
        left = connection.scalar(select(func.count()).where(versions.memory_id == added.id))
    assert left == 0


@pytest.mark.parametrize("text", ["", "   ", "x" * 2001])
def test_a_memory_is_some_text_and_not_a_document(store: MemoryStore, text: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        store.add(ALICE, text)
    assert refused.value.param == "text"
    assert store.list(ALICE) == []


def test_facts_are_parsed_trimmed_and_each_kept_once() -> None:
    answer = '{"facts": ["The user is Ada.", " the user  is ada. ", "Has a cat.", ""]}'
    assert parse_facts(answer) == ["The user is Ada.", "Has a cat."]
    with pytest.raises(EngineError):
        parse_facts('{"facts": ["cut off')


def test_the_transcript_keeps_the_end_of_a_long_conversation() -> None:
    def message(index: int, role: str, content: str) -> Message:
        return Message(index, role, content, None, None, None, None, None, None, "")

    messages = (
        message(1, "system", "You are terse."),
        message(2, "user", "x" * EXTRACT_CHARS),
        message(3, "assistant", "Noted."),
        message(4, "user", "My name is Ada."),
    )
    text = transcript(Conversation(1, "t", None, "", "", 4, messages=messages))
    assert len(text) == EXTRACT_CHARS
    assert text.endswith("Assistant: Noted.\nUser: My name is Ada.")
    assert "terse" not in text


def test_memory_context_lists_the_recalled_texts(store: MemoryStore) -> None:
    store.add(ALICE, "Has a cat", embedding=unit(1, 0), embedding_model=MODEL)
    context = memory_context(store.recall(ALICE, unit(1, 0), 5, MODEL))
    assert context.endswith("\n- Has a cat")
