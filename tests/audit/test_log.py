"""The audit log of a running server: what is recorded, proofs, export, erasure, and kill -9.

Real server processes and the official client; the bundle is checked with
the same offline verifier an inspector runs (``blackroad audit verify``).
"""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from blackroad.audit.checkpoint import open_checkpoint
from blackroad.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from tests.conftest import SMOLLM2
from tests.support.server import Server, blackroad, running_server

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("audited")
    with running_server(home, audit_texts="full", audit_checkpoint_seconds="3600") as server:
        yield server


def records(server: Server) -> list[dict[str, Any]]:
    with sqlite3.connect(server.home / "blackroad.db") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM audit_records ORDER BY idx").fetchall()
    return [dict(row) for row in rows]


def key_of(server: Server) -> str:
    shown = blackroad("audit", "key", home=server.home)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.strip()


def test_inference_and_changes_are_recorded_reads_are_not(audited: Server) -> None:
    before = len(records(audited))
    client = openai.OpenAI(base_url=audited.v1, api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model=SMOLLM2, messages=HI, max_tokens=3)
    client.models.list()
    made = httpx.post(audited.url + "/api/admin/users", json={"name": "auditee"}, timeout=30)
    assert made.status_code == 201, made.text
    new = records(audited)[before:]
    assert [r["record"].count('"kind":"inference"') for r in new] == [1, 0]
    chat, change = (json.loads(r["record"]) for r in new)
    assert (chat["path"], chat["model"], chat["status"]) == ("/v1/chat/completions", SMOLLM2, 200)
    assert chat["completion_tokens"] == reply.usage.completion_tokens  # type: ignore[union-attr]
    assert new[0]["output"] == reply.choices[0].message.content  # kept: audit_texts=full
    assert chat["output_sha256"] and chat["input_sha256"]
    assert (change["kind"], change["path"], change["status"]) == ("change", "/api/admin/users", 201)
    assert change["prev"] == new[0]["leaf_hash"].hex()  # each record names the one before


def test_checkpoints_and_proofs_verify_as_rfc_9162_says(audited: Server) -> None:
    client = openai.OpenAI(base_url=audited.v1, api_key="unused", max_retries=0)
    client.embeddings.create(model=SMOLLM2, input="one")
    with httpx.Client(base_url=audited.url, timeout=30) as http:
        first = open_checkpoint(http.get("/api/audit/checkpoint").text, key_of(audited))
        client.embeddings.create(model=SMOLLM2, input="two")
        second = open_checkpoint(http.get("/api/audit/checkpoint").text, key_of(audited))
        assert second.size > first.size
        leaves = [r["leaf_hash"] for r in records(audited)]
        for index in (0, first.size - 1, second.size - 1):
            proof = http.get("/api/audit/proof", params={"index": index, "size": second.size})
            hashes = [base64.b64decode(h) for h in proof.json()["hashes"]]
            assert verify_inclusion(leaves[index], index, second.size, hashes, second.root)
        both = http.get("/api/audit/consistency", params={"from": first.size, "to": second.size})
        hashes = [base64.b64decode(h) for h in both.json()["hashes"]]
        assert verify_consistency(first.size, second.size, first.root, second.root, hashes)
        assert http.get("/api/audit/proof", params={"index": 10**9}).status_code == 400
        # Past SQLite's integers: OverflowError was a 500.
        assert http.get("/api/audit/records", params={"from": 2**63}).status_code == 400
    assert all(leaf_hash(r["record"].encode()) == r["leaf_hash"] for r in records(audited))


def test_export_verifies_offline_and_erasure_keeps_the_chain(
    audited: Server, tmp_path: Path
) -> None:
    client = openai.OpenAI(base_url=audited.v1, api_key="unused", max_retries=0)
    client.chat.completions.create(model=SMOLLM2, messages=HI, max_tokens=2)
    target = len(records(audited)) - 1
    assert records(audited)[target]["output"] is not None
    erased = blackroad("audit", "erase", str(target), "--reason", "GDPR art. 17", home=audited.home)
    assert erased.returncode == 0, erased.stdout + erased.stderr
    rows = records(audited)
    assert rows[target]["input"] is None and rows[target]["output"] is None
    assert '"kind":"erasure"' in rows[-1]["record"] and f'"erases":{target}' in rows[-1]["record"]
    bundle = tmp_path / "audit.zip"
    exported = blackroad("audit", "export", "--out", str(bundle), home=audited.home)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    verified = blackroad("audit", "verify", str(bundle), "--key", key_of(audited), home=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"verified: {len(rows)} records" in verified.stdout


def test_kill_9_during_a_burst_loses_no_answered_request(tmp_path: Path) -> None:
    home = tmp_path / "crash"
    answered: list[str] = []
    with running_server(home) as server:
        client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)

        def burst(worker: int) -> None:
            for n in range(50):
                try:
                    client.embeddings.create(model=SMOLLM2, input=f"{worker}-{n}")
                except openai.APIError:
                    return  # the server died under it
                answered.append(f"{worker}-{n}")

        threads = [threading.Thread(target=burst, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        while len(answered) < 20:
            threading.Event().wait(0.05)
        server.process.send_signal(signal.SIGKILL)
        for thread in threads:
            thread.join()
    with running_server(home) as again:  # WAL replayed on open
        rows = records(again)
        assert [r["idx"] for r in rows] == list(range(len(rows)))  # no gap
        embeds = [r for r in rows if '"path":"/v1/embeddings"' in r["record"]]
        assert len(embeds) >= len(answered)  # every answered request has its record
        bundle = tmp_path / "after-crash.zip"
        exported = blackroad("audit", "export", "--out", str(bundle), home=home)
        assert exported.returncode == 0, exported.stderr
        verified = blackroad("audit", "verify", str(bundle), "--key", key_of(again), home=home)
        assert verified.returncode == 0, verified.stdout + verified.stderr


def test_an_export_up_to_a_time_verifies_and_carries_texts_only_from_its_start(
    audited: Server, tmp_path: Path
) -> None:
    client = openai.OpenAI(base_url=audited.v1, api_key="unused", max_retries=0)
    client.chat.completions.create(model=SMOLLM2, messages=HI, max_tokens=2)
    rows = records(audited)
    # The CLI takes whole seconds: the cut is the second after the last record so far.
    last = datetime.fromisoformat(rows[-1]["time"].replace("Z", "+00:00"))
    cut = (last.replace(microsecond=0) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    while datetime.now(UTC) < last.replace(microsecond=0) + timedelta(seconds=1.1):
        time.sleep(0.05)
    client.chat.completions.create(model=SMOLLM2, messages=HI, max_tokens=2)  # after the cut
    bundle = tmp_path / "range.zip"
    since = rows[-1]["time"][:19]
    exported = blackroad(
        "audit", "export", "--out", str(bundle), "--from", since, "--to", cut, home=audited.home
    )
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert f"{len(rows)} records" in exported.stdout
    verified = blackroad("audit", "verify", str(bundle), "--key", key_of(audited), home=tmp_path)
    assert verified.returncode == 0 and f"verified: {len(rows)} records" in verified.stdout
    with zipfile.ZipFile(bundle) as opened:
        lines = [json.loads(line) for line in opened.read("records.jsonl").splitlines()]
    kept = [line["index"] for line in lines if line["content"] is not None]
    assert kept and all(rows[i]["time"] >= since for i in kept)


def test_texts_are_pruned_only_past_the_retention(audited: Server) -> None:
    refused = blackroad("audit", "prune", "--days", "30", home=audited.home)
    assert refused.returncode == 1 and "183 days" in refused.stdout
    pruned = blackroad("audit", "prune", "--days", "365", home=audited.home)
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert '"kind":"prune"' in records(audited)[-1]["record"]


def test_changes_made_from_the_command_line_are_recorded_without_secrets(
    audited: Server,
) -> None:
    added = blackroad("users", "add", "cli-user", "--role", "user", home=audited.home)
    assert added.returncode == 0, added.stdout + added.stderr
    peer = blackroad(
        "nodes", "add", audited.url, "--kind", "ollama", "--name", "self", "--key", "s3cret",
        home=audited.home,
    )  # fmt: skip
    assert peer.returncode == 0, peer.stdout + peer.stderr
    assert blackroad("nodes", "rm", "self", home=audited.home).returncode == 0
    commands = [json.loads(r["record"]).get("command") for r in records(audited)[-3:]]
    assert commands == [
        "blackroad users add cli-user --role user",
        f"blackroad nodes add {audited.url} --kind ollama --name self --key '<hidden>'",
        "blackroad nodes rm self",
    ]
    assert all("s3cret" not in r["record"] for r in records(audited))
