"""Conversations and long-term memories over HTTP, on a real server with real models."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import MINILM, SMOLLM2
from tests.support.server import HTTP_TIMEOUT, Server, blackroad, running_server

EMBEDDING_MODEL = MINILM
MAX_BODY = 64 * 1024
INTRO = [
    {
        "role": "user",
        "content": "Hi! My name is Ada and I live in Lisbon. I have a cat called Pixel.",
    },
    {"role": "assistant", "content": "Nice to meet you, Ada! How can I help?"},
    {"role": "user", "content": "I prefer answers in French."},
]


@dataclass(frozen=True)
class Users:
    server: Server
    alice: httpx.Client
    bob: httpx.Client


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Users]:
    home = tmp_path_factory.mktemp("memory")
    settings = {"auth": "on", "embedding_model": EMBEDDING_MODEL, "max_body_bytes": str(MAX_BODY)}
    with running_server(home, **settings) as server:

        def client(user: str) -> httpx.Client:
            assert blackroad("users", "add", user, home=home).returncode == 0
            created = blackroad("keys", "create", user, home=home)
            assert created.returncode == 0, created.stderr
            key = created.stdout.strip().splitlines()[-1]
            return httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=300
            )

        with client("alice") as alice, client("bob") as bob:
            yield Users(server, alice, bob)


def _created(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 201, response.text
    found: dict[str, object] = response.json()
    return found


def test_conversations_are_created_listed_renamed_and_deleted(users: Users) -> None:
    alice = users.alice
    created = _created(alice.post("/api/conversations", json={"messages": INTRO[:2]}))
    assert created["title"] == INTRO[0]["content"]  # the first user message, trimmed
    assert created["message_count"] == 2
    path = f"/api/conversations/{created['id']}"
    got = alice.get(path).json()
    assert [(m["role"], m["content"]) for m in got["messages"]] == [
        (m["role"], m["content"]) for m in INTRO[:2]
    ]
    renamed = alice.patch(path, json={"title": "Meeting Ada"})
    assert renamed.status_code == 200 and renamed.json()["title"] == "Meeting Ada"
    listed = alice.get("/api/conversations").json()["conversations"]
    assert listed[0]["id"] == created["id"] and listed[0]["title"] == "Meeting Ada"
    assert alice.delete(path).status_code == 204
    assert alice.get(path).status_code == 404
    assert created["id"] not in [
        c["id"] for c in alice.get("/api/conversations").json()["conversations"]
    ]


def test_search_covers_titles_and_messages(users: Users) -> None:
    alice = users.alice
    pets = _created(alice.post("/api/conversations", json={"title": "Pets", "messages": INTRO}))
    _created(alice.post("/api/conversations", json={"title": "Gardening"}))
    hits = alice.get("/api/conversations", params={"q": "lisbon cat"}).json()["conversations"]
    assert [c["id"] for c in hits] == [pets["id"]]
    assert "[Lisbon]" in hits[0]["match"]
    by_title = alice.get("/api/conversations", params={"q": "gardening"}).json()
    assert [c["title"] for c in by_title["conversations"]] == ["Gardening"]
    syntax = alice.get("/api/conversations", params={"q": 'NEAR("cat" OR) *'})
    assert syntax.status_code == 200


def test_export_as_json_and_markdown(users: Users) -> None:
    alice = users.alice
    created = _created(alice.post("/api/conversations", json={"messages": INTRO}))
    path = f"/api/conversations/{created['id']}/export"
    exported = alice.get(path)
    assert exported.headers["content-type"] == "application/json"
    assert f"conversation-{created['id']}.json" in exported.headers["content-disposition"]
    assert [m["content"] for m in exported.json()["messages"]] == [m["content"] for m in INTRO]
    markdown = alice.get(path, params={"format": "markdown"})
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text.startswith(f"# {INTRO[0]['content']}\n")
    assert f"## Assistant\n\n{INTRO[1]['content']}\n" in markdown.text
    assert alice.get(path, params={"format": "pdf"}).status_code == 400


def test_a_user_cannot_see_rename_or_delete_another_users_things(users: Users) -> None:
    alice, bob = users.alice, users.bob
    chat = _created(alice.post("/api/conversations", json={"title": "Private", "messages": INTRO}))
    memory = _created(alice.post("/api/memories", json={"text": "Ada's bank PIN is 4321"}))
    chat_path, memory_path = f"/api/conversations/{chat['id']}", f"/api/memories/{memory['id']}"
    attempts = [
        bob.get(chat_path),
        bob.patch(chat_path, json={"title": "Bob's now"}),
        bob.delete(chat_path),
        bob.get(f"{chat_path}/export"),
        bob.post(f"{chat_path}/memories"),
        bob.get(memory_path),
        bob.patch(memory_path, json={"text": "changed by Bob"}),
        bob.delete(memory_path),
        bob.get(f"{memory_path}/history"),
    ]
    for answer in attempts:
        assert answer.status_code == 404, (answer.request.method, answer.request.url)
        assert "Private" not in answer.text and "4321" not in answer.text
    assert chat["id"] not in [
        c["id"] for c in bob.get("/api/conversations").json()["conversations"]
    ]
    assert bob.get("/api/conversations", params={"q": "Lisbon"}).json()["conversations"] == []
    assert memory["id"] not in [m["id"] for m in bob.get("/api/memories").json()["memories"]]
    recalled = bob.post("/api/memories/recall", json={"query": "bank PIN"}).json()
    assert memory["id"] not in [m["id"] for m in recalled["memories"]]
    # Alice's things are as they were.
    assert alice.get(chat_path).json()["title"] == "Private"
    assert alice.get(memory_path).json()["text"] == "Ada's bank PIN is 4321"
    assert len(alice.get(f"{memory_path}/history").json()["versions"]) == 1


def test_every_edit_of_a_memory_is_in_its_history(users: Users) -> None:
    alice = users.alice
    memory = _created(alice.post("/api/memories", json={"text": "Works as a nurse"}))
    assert memory["source"] == "user" and memory["embedding_model"] == EMBEDDING_MODEL
    path = f"/api/memories/{memory['id']}"
    edited = alice.patch(path, json={"text": "Works as a doctor"})
    assert edited.status_code == 200 and edited.json()["version"] == 2
    versions = alice.get(f"{path}/history").json()["versions"]
    assert [(v["version"], v["text"], v["changed_by"]) for v in versions] == [
        (1, "Works as a nurse", "alice"),
        (2, "Works as a doctor", "alice"),
    ]
    assert alice.delete(path).status_code == 204
    assert alice.get(f"{path}/history").status_code == 404


def test_recall_ranks_the_relevant_memory_first(users: Users) -> None:
    bob = users.bob  # Bob's memories only: the other tests give Alice hers
    texts = [
        "The user has a cat named Pixel.",
        "The user lives in Lisbon.",
        "The user is allergic to peanuts.",
        "The user prefers answers in French.",
    ]
    ids = [_created(bob.post("/api/memories", json={"text": t}))["id"] for t in texts]
    for query, expected in [
        ("What is my cat called?", 0),
        ("Which city do I live in?", 1),
        ("Can I eat peanut butter?", 2),
    ]:
        answer = bob.post("/api/memories/recall", json={"query": query, "k": 2})
        assert answer.status_code == 200, answer.text
        found = answer.json()["memories"]
        assert len(found) == 2 and found[0]["id"] == ids[expected], (query, found)
        assert found[0]["similarity"] >= found[1]["similarity"]


def test_extracted_facts_are_visible_and_editable(users: Users) -> None:
    alice = users.alice
    chat = _created(alice.post("/api/conversations", json={"messages": INTRO}))
    extracted = alice.post(f"/api/conversations/{chat['id']}/memories")
    facts = _created(extracted)["memories"]
    assert isinstance(facts, list) and facts, "the memory model found no fact in the intro"
    assert all(f["source"] == "extracted" and f["conversation_id"] == chat["id"] for f in facts)
    assert any("Ada" in f["text"] or "Lisbon" in f["text"] for f in facts), facts
    listed = {m["id"] for m in alice.get("/api/memories").json()["memories"]}
    assert {f["id"] for f in facts} <= listed
    first = f"/api/memories/{facts[0]['id']}"
    edited = alice.patch(first, json={"text": "The user is called Ada Lovelace."})
    assert edited.json()["text"] == "The user is called Ada Lovelace."
    assert edited.json()["source"] == "extracted"
    assert alice.delete(first).status_code == 204
    # Asked again, nothing already remembered comes twice.
    again = _created(alice.post(f"/api/conversations/{chat['id']}/memories"))["memories"]
    kept = {m["text"].casefold() for m in alice.get("/api/memories").json()["memories"]}
    assert len(kept) == len(alice.get("/api/memories").json()["memories"])
    assert isinstance(again, list)
    # The tokens extraction cost are the request's, as Alice's usage.
    with sqlite3.connect(users.server.home / "blackroad.db") as db:
        rows = db.execute(
            "SELECT user, model, prompt_tokens, completion_tokens FROM requests"
            " WHERE path = ? ORDER BY id",
            (f"/api/conversations/{chat['id']}/memories",),
        ).fetchall()
    assert rows
    assert all(r[0] == "alice" and r[1] == SMOLLM2 and r[2] > 0 and r[3] > 0 for r in rows)


def test_an_empty_conversation_has_nothing_to_extract(users: Users) -> None:
    chat = _created(users.alice.post("/api/conversations", json={"title": "Empty"}))
    answer = users.alice.post(f"/api/conversations/{chat['id']}/memories")
    assert answer.status_code == 400 and "nothing to remember" in answer.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/conversations", {"title": ""}),
        ("POST", "/api/conversations", {"title": "x" * 201}),
        ("POST", "/api/conversations", {"unknown": 1}),
        ("POST", "/api/conversations", {"messages": [{"role": "wizard", "content": "hi"}]}),
        ("POST", "/api/conversations", {"messages": [{"role": "user", "content": 3}]}),
        ("PATCH", "/api/conversations/1", {}),
        ("GET", "/api/conversations/not-a-number", None),
        ("GET", f"/api/conversations/{2**63}", None),
        # Past SQLite's integers: OverflowError was a 500.
        ("POST", "/api/chat", {"model": SMOLLM2, "blackroad": {"conversation": 2**63}}),
        ("POST", "/api/chat", {"model": SMOLLM2, "blackroad": {"knowledge_bases": [2**64]}}),
        ("GET", "/api/conversations?limit=0", None),
        ("GET", "/api/conversations?limit=100000", None),
        ("POST", "/api/memories", {"text": ""}),
        ("POST", "/api/memories", {"text": "x" * 2001}),
        ("POST", "/api/memories", {"text": "ok", "source": "extracted"}),
        ("PATCH", "/api/memories/1", {"text": None}),
        ("POST", "/api/memories/recall", {"query": "cat", "k": 0}),
        ("POST", "/api/memories/recall", {"query": "cat", "k": 51}),
        ("POST", "/api/memories/recall", {"query": ""}),
        ("POST", "/api/memories/recall", [1, 2]),
    ],
)
def test_malformed_requests_are_400(users: Users, method: str, path: str, body: object) -> None:
    answer = users.alice.request(method, path, json=body)
    assert answer.status_code == 400, answer.text
    assert "error" in answer.json()


def test_broken_and_oversized_bodies_are_refused_and_the_server_keeps_serving(
    users: Users,
) -> None:
    alice = users.alice
    headers = {"Content-Type": "application/json"}
    broken = alice.post("/api/memories", content=b'{"text": "unterminated', headers=headers)
    assert broken.status_code == 400
    huge = json.dumps({"text": "x" * MAX_BODY}).encode()
    assert alice.post("/api/memories", content=huge, headers=headers).status_code == 413
    messages = [{"role": "user", "content": "y" * 1000}] * (MAX_BODY // 1000 + 1)
    too_many = alice.post("/api/conversations", json={"messages": messages})
    assert too_many.status_code == 413
    assert users.server.alive()
    assert (
        _created(alice.post("/api/memories", json={"text": "Still here"}))["text"] == "Still here"
    )


def test_nothing_answers_without_a_key(users: Users) -> None:
    url = users.server.url
    assert httpx.get(f"{url}/api/conversations", timeout=HTTP_TIMEOUT).status_code == 401
    anonymous = httpx.post(f"{url}/api/memories", json={"text": "anonymous"}, timeout=HTTP_TIMEOUT)
    assert anonymous.status_code == 401
