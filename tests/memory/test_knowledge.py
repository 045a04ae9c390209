"""Knowledge bases through a real server: every file type, search, citations, sharing, deletion.

One server with keys required and three users: Alice owns the bases, Bob is
in the group ``legal`` she shares one with, Carol is in no group.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from blackroad.store import sqlite
from tests.conftest import MINILM, SMOLLM2
from tests.support.documents import docx_file, pdf
from tests.support.server import Server, blackroad, running_server

ALICE, BOB, CAROL = "alice", "bob", "carol"

# One unmistakable fact per file type; the search for its code word must find it.
FILES: dict[str, bytes] = {
    "notes.txt": b"Visiting hours.\n\nThe ward closes to visitors at 8 pm; quokka badges open.\n",
    "guide.md": (
        b"# Sepsis protocol\n\nGive fluids within one hour.\n\n"
        b"## Escalation\n\nPage the marmoset team when lactate exceeds 4 mmol/L.\n"
    ),
    "page.html": (
        b"<html><head><title>Parking</title><style>p{color:red}</style>"
        b"<script>var pangolin = 1;</script></head><body><h1>Parking</h1>"
        b"<p>Staff park on level 3 &amp; show the narwhal permit.</p></body></html>"
    ),
    "rota.csv": b"name,role,phone\nDr Okafor,axolotl surgeon,5551\nNurse Lee,triage,5552\n",
    "policy.pdf": pdf(
        [
            "Page one is about billing: invoices are due in thirty days.",
            "Page two holds the rule: wombat cases go to the senior partner.",
        ],
        title="Firm policy",
    ),
    "contract.docx": docx_file(
        [
            ("Definitions", ["The Client means the party named in schedule 1."]),
            ("Termination", ["Either party may end the ocelot agreement with 90 days notice."]),
        ]
    ),
}
CODE_WORDS = {
    "notes.txt": "quokka",
    "guide.md": "marmoset",
    "page.html": "narwhal",
    "rota.csv": "axolotl",
    "policy.pdf": "wombat",
    "contract.docx": "ocelot",
}


@dataclass(frozen=True)
class World:
    server: Server
    keys: dict[str, str]

    def client(self, user: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url,
            headers={"Authorization": f"Bearer {self.keys[user]}"},
            timeout=300,
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("knowledge")
    with running_server(home, auth="on", max_upload_bytes=str(2 << 20)) as server:
        keys = {}
        for user in (ALICE, BOB, CAROL):
            assert blackroad("users", "add", user, home=home).returncode == 0
            created = blackroad("keys", "create", user, home=home)
            assert created.returncode == 0, created.stderr
            keys[user] = created.stdout.strip().splitlines()[-1]
        assert blackroad("groups", "add", "legal", "--member", BOB, home=home).returncode == 0
        yield World(server, keys)


def upload(api: httpx.Client, kb: int | str, files: dict[str, bytes], **form: str) -> Any:
    answer = api.post(
        f"/api/kb/{kb}/documents", files=[("files", (n, d)) for n, d in files.items()], data=form
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["documents"]


def create(api: httpx.Client, name: str, **fields: Any) -> dict[str, Any]:
    answer = api.post("/api/kb", json={"name": name, **fields})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


@pytest.fixture(scope="module")
def cases(world: World) -> dict[str, Any]:
    """Alice's base holding one document of each type."""
    with world.client(ALICE) as alice:
        base = create(alice, "cases", description="every file type")
        uploaded = upload(alice, base["id"], FILES, metadata=json.dumps({"client": "acme"}))
    assert [d["outcome"] for d in uploaded] == ["added"] * len(FILES)
    return {"base": base, "documents": {d["document"]["name"]: d["document"] for d in uploaded}}


def database(world: World) -> sqlite.Connection:
    connection = sqlite.connect(world.server.home / "blackroad.db")
    connection.row_factory = sqlite.Row
    return connection


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_file_type_is_found_with_its_offsets(
    world: World, cases: dict[str, Any], name: str
) -> None:
    kb = cases["base"]["id"]
    with world.client(ALICE) as alice:
        hits = alice.get(f"/api/kb/{kb}/search", params={"q": CODE_WORDS[name], "k": 3}).json()
        top = hits["results"][0]
        assert top["document"]["name"] == name
        assert CODE_WORDS[name] in top["text"].lower()
        document = alice.get(f"/api/kb/{kb}/documents/{top['document']['id']}").json()
    assert document["text"][top["start"] : top["end"]] == top["text"]
    assert document["metadata"]["client"] == "acme"
    if name == "policy.pdf":
        assert top["page"] == 2 and document["pages"] == 2
        assert document["metadata"]["title"] == "Firm policy"


def test_html_drops_scripts_and_styles(world: World, cases: dict[str, Any]) -> None:
    kb = cases["base"]["id"]
    with world.client(ALICE) as alice:
        hits = alice.post(
            f"/api/kb/{kb}/search", json={"query": "pangolin", "mode": "lexical"}
        ).json()
    assert hits["results"] == []


def test_search_modes_and_filters(world: World, cases: dict[str, Any]) -> None:
    kb = cases["base"]["id"]
    pdf_id = cases["documents"]["policy.pdf"]["id"]
    with world.client(ALICE) as alice:
        for mode in ("lexical", "vector", "hybrid"):
            answer = alice.post(
                f"/api/kb/{kb}/search", json={"query": "senior partner wombat", "mode": mode}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["results"][0]["document"]["id"] == pdf_id
        reranked = alice.post(
            f"/api/kb/{kb}/search",
            json={"query": "senior partner wombat", "k": 3, "rerank": MINILM},
        ).json()["results"]
        assert reranked[0]["document"]["id"] == pdf_id
        scores = [hit["score"] for hit in reranked]
        assert scores == sorted(scores, reverse=True) and all(-1 <= x <= 1 for x in scores)
        missing = alice.post(
            f"/api/kb/{kb}/search", json={"query": "wombat", "rerank": "no-such:model"}
        )
        assert missing.status_code == 404
        only_md = alice.post(
            f"/api/kb/{kb}/search",
            json={"query": "wombat", "filters": {"media_type": "text/markdown"}},
        ).json()["results"]
        assert only_md and {h["document"]["name"] for h in only_md} == {"guide.md"}
        none = alice.post(
            f"/api/kb/{kb}/search",
            json={"query": "wombat", "filters": {"metadata": {"client": "globex"}}},
        ).json()["results"]
        assert none == []


def test_unchanged_upload_does_nothing_and_a_changed_one_is_reindexed(world: World) -> None:
    with world.client(ALICE) as alice:
        base = create(alice, "versions")
        first = upload(alice, base["id"], {"memo.txt": b"The tapir rule applies on Mondays."})
        again = upload(alice, base["id"], {"memo.txt": b"The tapir rule applies on Mondays."})
        assert again[0]["outcome"] == "unchanged"
        assert again[0]["document"]["id"] == first[0]["document"]["id"]
        changed = upload(alice, base["id"], {"memo.txt": b"The tapir rule applies on Fridays."})
        assert changed[0]["outcome"] == "updated"
        documents = alice.get(f"/api/kb/{base['id']}/documents").json()["documents"]
        assert len(documents) == 1 and documents[0]["sha256"] == changed[0]["document"]["sha256"]
        hits = alice.get(f"/api/kb/{base['id']}/search", params={"q": "Mondays"}).json()
        assert all("Mondays" not in h["text"] for h in hits["results"])


def _index_counts(world: World, kb: int) -> tuple[int, int, int]:
    """Chunks, full-text entries and vectors of a base."""
    with database(world) as db:
        chunks = db.execute("SELECT count(*) FROM chunks WHERE kb_id = ?", (kb,)).fetchone()[0]
        fts = db.execute(
            "SELECT count(*) FROM chunks_fts "
            "WHERE rowid IN (SELECT id FROM chunks WHERE kb_id = ?)",
            (kb,),
        ).fetchone()[0]
        tables = [
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ?",
                (f"%vec%{kb}",),
            )
        ]
        vectors = sum(db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables)  # noqa: S608
    return chunks, fts, vectors


def test_deleting_a_document_removes_its_chunks_and_vectors(world: World) -> None:
    with world.client(ALICE) as alice:
        base = create(alice, "deletions")
        kept, gone = upload(
            alice,
            base["id"],
            {"keep.txt": b"The heron clause stays.", "drop.txt": b"The ibis clause goes away."},
        )
        before = _index_counts(world, base["id"])
        assert before[0] == before[1] == before[2] >= 2
        answer = alice.delete(f"/api/kb/{base['id']}/documents/{gone['document']['id']}")
        assert answer.status_code == 204
        after = _index_counts(world, base["id"])
        assert after[0] == after[1] == after[2] == before[0] - gone["document"]["chunks"]
        for mode in ("lexical", "vector"):
            hits = alice.post(
                f"/api/kb/{base['id']}/search", json={"query": "ibis clause", "mode": mode}
            ).json()["results"]
            assert all(h["document"]["id"] == kept["document"]["id"] for h in hits)
        digest = gone["document"]["sha256"]
        assert not (world.server.home / "documents" / digest[:2] / digest).exists()
        assert alice.delete(f"/api/kb/{base['id']}").status_code == 204
    assert _index_counts(world, base["id"]) == (0, 0, 0)


def test_bases_are_private_until_shared_with_a_group(world: World, cases: dict[str, Any]) -> None:
    kb = cases["base"]["id"]
    with world.client(ALICE) as alice, world.client(BOB) as bob, world.client(CAROL) as carol:
        for outsider in (bob, carol):
            assert outsider.get(f"/api/kb/{kb}").status_code == 404
            assert outsider.get(f"/api/kb/{kb}/search", params={"q": "wombat"}).status_code == 404
            assert cases["base"]["name"] not in outsider.get("/api/kb").text
        answer = alice.put(f"/api/kb/{kb}/shares/legal", json={"permission": "read"})
        assert answer.status_code == 200, answer.text
        try:
            hits = bob.get(f"/api/kb/{kb}/search", params={"q": "wombat"})
            assert hits.status_code == 200 and hits.json()["results"]
            assert bob.get("/api/kb").json()["knowledge_bases"][0]["permission"] == "read"
            refused = bob.post(
                f"/api/kb/{kb}/documents", files=[("files", ("x.txt", b"bob was here"))]
            )
            assert refused.status_code == 403
            assert bob.delete(f"/api/kb/{kb}").status_code == 403
            assert carol.get(f"/api/kb/{kb}").status_code == 404
            chat = bob.post(
                "/v1/chat/completions",
                json={
                    "model": SMOLLM2,
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": "Who takes wombat cases?"}],
                    "blackroad": {"knowledge_bases": [kb]},
                },
            )
            assert chat.status_code == 200, chat.text
            refused_chat = carol.post(
                "/api/chat",
                json={
                    "model": SMOLLM2,
                    "stream": False,
                    "messages": [{"role": "user", "content": "Who takes wombat cases?"}],
                    "blackroad": {"knowledge_bases": [kb]},
                },
            )
            assert refused_chat.status_code == 404
        finally:
            assert alice.delete(f"/api/kb/{kb}/shares/legal").status_code == 204
        assert bob.get(f"/api/kb/{kb}").status_code == 404


QUESTION = "Which cases go to the senior partner?"


def test_chat_cites_its_passages_openai(world: World, cases: dict[str, Any]) -> None:
    kb = cases["base"]["id"]
    client = openai.OpenAI(base_url=world.server.v1, api_key=world.keys[ALICE])
    extra = {"blackroad": {"knowledge_bases": [kb], "top_k": 3}}
    completion = client.chat.completions.create(
        model=SMOLLM2,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=16,
        temperature=0,
        extra_body=extra,
    )
    assert completion.choices[0].message.content
    found = (completion.model_extra or {})["blackroad"]
    assert found["knowledge_mode"] == "retrieve"
    citations = found["citations"]
    assert citations[0]["document"]["name"] == "policy.pdf"
    assert citations[0]["page"] == 2 and "wombat" in citations[0]["quote"]
    assert [c["index"] for c in citations] == list(range(1, len(citations) + 1))
    stream = client.chat.completions.create(
        model=SMOLLM2,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=8,
        stream=True,
        extra_body=extra,
    )
    chunks = list(stream)
    assert (chunks[0].model_extra or {})["blackroad"]["citations"] == citations


def test_chat_cites_its_passages_ollama(world: World, cases: dict[str, Any]) -> None:
    kb = cases["base"]["id"]
    body = {
        "model": SMOLLM2,
        "messages": [{"role": "user", "content": QUESTION}],
        "options": {"num_predict": 8, "temperature": 0},
        "blackroad": {"knowledge_bases": [cases["base"]["name"]]},
    }
    with world.client(ALICE) as alice:
        answer = alice.post("/api/chat", json={**body, "stream": False})
        assert answer.status_code == 200, answer.text
        # The official client's model still parses a response with the extension field.
        parsed = ollama.ChatResponse.model_validate(answer.json())
        assert parsed.done and parsed.message.content is not None
        citations = answer.json()["blackroad"]["citations"]
        assert citations[0]["document"]["name"] == "policy.pdf"
        assert citations[0]["knowledge_base"] == kb
        with alice.stream("POST", "/api/chat", json={**body, "stream": True}) as streamed:
            lines = [json.loads(line) for line in streamed.iter_lines() if line]
    assert lines[-1]["done"] and lines[-1]["blackroad"]["citations"] == citations
    assert all("blackroad" not in line for line in lines[:-1])


def test_whole_document_mode(world: World) -> None:
    with world.client(ALICE) as alice:
        base = create(alice, "small")
        upload(alice, base["id"], {"card.txt": b"The lynx code is 4417. Dial it twice."})
        ask = {
            "model": SMOLLM2,
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "What is the code?"}],
        }
        whole = alice.post(
            "/v1/chat/completions",
            json={**ask, "blackroad": {"knowledge_bases": [base["id"]], "knowledge_mode": "whole"}},
        ).json()["blackroad"]
        assert whole["knowledge_mode"] == "whole"
        assert whole["citations"][0]["quote"] == "The lynx code is 4417. Dial it twice."
        big = "The long report rambles on. " * 4000
        upload(alice, base["id"], {"report.txt": big.encode()})
        fallback = alice.post(
            "/v1/chat/completions",
            json={**ask, "blackroad": {"knowledge_bases": [base["id"]], "knowledge_mode": "whole"}},
        ).json()["blackroad"]
    assert fallback["knowledge_mode"] == "retrieve" and fallback["citations"]


def test_bad_input_gets_a_precise_error(world: World, cases: dict[str, Any]) -> None:
    kb = cases["base"]["id"]
    with world.client(ALICE) as alice:
        unsupported = alice.post(
            f"/api/kb/{kb}/documents", files=[("files", ("sheet.xlsx", b"PK\x03\x04junk"))]
        )
        assert unsupported.status_code == 400 and "sheet.xlsx" in unsupported.text
        corrupt = alice.post(
            f"/api/kb/{kb}/documents", files=[("files", ("broken.pdf", b"%PDF-1.7 garbage"))]
        )
        assert corrupt.status_code == 400 and "broken.pdf" in corrupt.text
        bad_metadata = alice.post(
            f"/api/kb/{kb}/documents",
            files=[("files", ("a.txt", b"alpha"))],
            data={"metadata": "[1, 2"},
        )
        assert bad_metadata.status_code == 400
        assert "metadata" in bad_metadata.json()["error"]
        huge = alice.post(
            f"/api/kb/{kb}/documents", files=[("files", ("big.txt", b"x" * (3 << 20)))]
        )
        assert huge.status_code == 413
        no_files = alice.post(f"/api/kb/{kb}/documents", data={"metadata": "{}"})
        assert no_files.status_code == 400
        assert alice.get("/api/kb/999999").status_code == 404
        # A digit to str.isdigit but not to int, and an id past SQLite's: both were a 500.
        assert alice.get("/api/kb/\u00b9").status_code == 404
        assert alice.delete(f"/api/kb/{2**64}").status_code == 404
        assert alice.get(f"/api/kb/{kb}/search", params={"q": ""}).status_code == 400
        for body in ({"name": ""}, {"name": "12345"}, {"name": "a/b"}, {"name": "x", "extra": 1}):
            assert alice.post("/api/kb", json=body).status_code == 400, body
        unknown = alice.post(
            "/v1/chat/completions",
            json={
                "model": SMOLLM2,
                "messages": [{"role": "user", "content": "hi"}],
                "blackroad": {"knowledge_base": [kb]},
            },
        )
        assert unknown.status_code == 400 and "blackroad" in unknown.json()["error"]["param"]
        ollama_unknown = alice.post(
            "/api/chat",
            json={
                "model": SMOLLM2,
                "messages": [{"role": "user", "content": "hi"}],
                "blackroad": {"knowledge_bases": "cases"},
            },
        )
        assert ollama_unknown.status_code == 400 and "error" in ollama_unknown.json()
        hostile = alice.get(f"/api/kb/{kb}/search", params={"q": '" OR NEAR( * -'})
        assert hostile.status_code == 200
        assert alice.get(f"/api/kb/{kb}").status_code == 200  # still serving


def test_cli_adds_a_folder_with_progress(world: World, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.md").write_text("# One\n\nThe egret memo.\n")
    (folder / "sub" / "two.txt").write_text("The kestrel memo.\n")
    (folder / "skip.bin").write_bytes(b"\x00\x01")
    env = {"api_key": world.keys[ALICE]}
    home, port = world.server.home, world.server.port
    assert blackroad("kb", "create", "folder", home=home, port=port, **env).returncode == 0
    added = blackroad("kb", "add", "folder", str(folder), home=home, port=port, **env)
    assert added.returncode == 0, added.stdout + added.stderr
    assert "2 added" in added.stdout
    again = blackroad("kb", "add", "folder", str(folder), home=home, port=port, **env)
    assert "2 unchanged" in again.stdout
    found = blackroad("kb", "search", "folder", "kestrel", "--json", home=home, port=port, **env)
    assert json.loads(found.stdout)["results"][0]["document"]["name"] == "two.txt"


def test_kill_during_ingestion_leaves_no_half_indexed_document(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # Far more than any machine embeds in the 3 s before the kill; only its start is read after.
    paragraphs = "\n\n".join(
        f"Paragraph {i} of the enormous filing about case {i}." for i in range(40_000)
    )
    with running_server(home) as server:
        with httpx.Client(base_url=server.url, timeout=300) as api:
            kb = create(api, "crash")["id"]
            upload(api, kb, {"small.txt": b"The small filing survives."})
            outcome: list[Any] = []

            def ingest() -> None:
                try:
                    outcome.append(upload(api, kb, {"big.txt": paragraphs.encode()}))
                except httpx.TransportError as exc:
                    outcome.append(exc)

            worker = threading.Thread(target=ingest)
            worker.start()
            worker.join(timeout=3)
            assert worker.is_alive(), "ingestion finished before the kill: make the file bigger"
            server.process.kill()
            worker.join()
        assert isinstance(outcome[0], httpx.TransportError)
    with running_server(home) as server, httpx.Client(base_url=server.url, timeout=300) as api:
        documents = api.get(f"/api/kb/{kb}/documents").json()["documents"]
        assert [d["name"] for d in documents] == ["small.txt"]
        world = World(server, {})
        chunks, fts, vectors = _index_counts(world, kb)
        assert chunks == fts == vectors == documents[0]["chunks"]
        assert list((home / "documents").glob("??/*")) == [
            home / "documents" / documents[0]["sha256"][:2] / documents[0]["sha256"]
        ]
        assert upload(api, kb, {"big.txt": paragraphs[:2000].encode()})[0]["outcome"] == "added"


def test_a_base_chooses_its_embedding_model(world: World) -> None:
    with world.client(ALICE) as alice:
        unknown = alice.post("/api/kb", json={"name": "x", "embedding_model": "no:such"})
        assert unknown.status_code == 404
        base = create(alice, "decoder-vectors", embedding_model=SMOLLM2)
        assert base["embedding_model"] == SMOLLM2 and base["dimensions"] is None
        upload(alice, base["id"], {"m.txt": b"The bittern rule.\n\nThe curlew rule."})
        found = alice.get(f"/api/kb/{base['id']}").json()
        hits = alice.post(
            f"/api/kb/{base['id']}/search", json={"query": "bittern", "mode": "vector"}
        ).json()["results"]
    assert found["dimensions"] == 576  # SmolLM2-135M's width, not MiniLM's 384
    assert hits and all(hit["vector_rank"] is not None for hit in hits)
