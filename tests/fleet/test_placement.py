"""Placement: the control plane keeps N replicas of a model on its nodes, pulled from the registry.

Real processes: a control plane, three joined BlackRoad nodes, and the
organisation's registry (a directory every machine can read). The model is
only in the registry at first; the nodes pull it (sha256-verified) when
told to, and when a node holding it dies another takes its place.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from blackroad.engines.ollama_peer import OllamaPeer
from blackroad.fleet.members import PeerAccess, RemoteMember
from blackroad.models.catalog import Catalog
from blackroad.models.registry import open_registry, push
from blackroad.models.store import ModelStore
from blackroad.service.models import ModelManager
from blackroad.store.database import Database
from tests.conftest import SMOLLM2
from tests.support.fleet import Node, joined
from tests.support.server import HTTP_TIMEOUT, Server, blackroad, running_server
from tests.support.wait import until

PLACED = "team/placed:1"


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A registry holding PLACED, as the organisation's mirror would."""
    home, root = tmp_path / "source", tmp_path / "registry"
    root.mkdir()
    database = Database(home / "blackroad.db")
    try:
        ModelManager(Catalog(home / "models", database)).copy(SMOLLM2, PLACED)
    finally:
        database.close()
    with contextlib.closing(open_registry(str(root))) as target:
        assert list(push(ModelStore(home / "models"), target, PLACED))[-1] == {"status": "success"}
    return root


@pytest.fixture
def fleet(registry: Path, tmp_path: Path) -> Iterator[tuple[Server, list[Node]]]:
    place = {"registry": str(registry), "fleet_probe_seconds": "0.5"}
    with running_server(tmp_path / "control", **place) as control:
        created = httpx.post(control.url + "/api/fleet/tokens", json={"uses": 3}, timeout=60)
        token = created.json()["token"]
        nodes = [
            joined(control.url, tmp_path / f"n{i}", f"n{i}", token, registry=str(registry),
                   num_threads="1", num_parallel="1")
            for i in range(3)
        ]  # fmt: skip
        try:
            for node in nodes:
                node.wait_ready()
            until(lambda: _up(control) == 3, timeout=60)
            yield control, nodes
        finally:
            for node in nodes:
                node.stop()


def _fleet(control: Server) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = httpx.get(
        control.url + "/api/fleet", timeout=HTTP_TIMEOUT
    ).json()["nodes"]
    return nodes[1:]


def _up(control: Server) -> int:
    return sum(n["state"] == "up" and n["stats"] is not None for n in _fleet(control))


def _routed(control: Server) -> list[str]:
    listed = httpx.get(control.v1 + "/models", timeout=HTTP_TIMEOUT).json()["data"]
    return [model["id"] for model in listed]


def _serving(control: Server) -> list[str]:
    answer = httpx.get(control.url + "/api/fleet/placements", timeout=HTTP_TIMEOUT)
    placements = answer.json()["placements"]
    assert [p["model"] for p in placements] == [PLACED]
    serving: list[str] = placements[0]["serving"]
    return serving


def test_a_placed_model_is_pulled_onto_n_nodes_and_kept_there(
    fleet: tuple[Server, list[Node]],
) -> None:
    control, nodes = fleet
    placed = blackroad("models", "place", PLACED, "--replicas", "2", home=control.home)
    assert placed.returncode == 0, placed.stdout + placed.stderr
    until(lambda: len(_serving(control)) == 2, timeout=120)
    # The router learns what a node serves at its next sync: wait until it routes the model.
    until(lambda: PLACED in _routed(control), timeout=60)
    first = _serving(control)
    # Loaded to stay, as their heartbeats report. A node loading a model it just pulled
    # can miss probes on a loaded machine: ask once both are loaded and serving again.
    until(lambda: all(PLACED in _loaded(control)[name] for name in first))
    until(lambda: set(_serving(control)) == set(first), timeout=60)
    client = openai.OpenAI(base_url=control.v1, api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model=PLACED, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert reply.choices[0].message.content

    by_name = {f"n{i}": node for i, node in enumerate(nodes)}
    by_name[first[0]].kill()
    # The dead replica is replaced by the node that had none.
    (spare,) = set(by_name) - set(first)
    until(lambda: set(_serving(control)) == {first[1], spare}, timeout=120)


def _loaded(control: Server) -> dict[str, list[str]]:
    return {n["name"]: n["stats"]["loaded"] for n in _fleet(control)}


def test_placements_are_set_listed_and_removed_over_the_api(
    fleet: tuple[Server, list[Node]],
) -> None:
    control, _ = fleet
    with httpx.Client(base_url=control.url, timeout=30) as http:
        assert http.post("/api/fleet/placements", json={"model": PLACED, "replicas": 1}).json()
        bad = http.post("/api/fleet/placements", json={"model": PLACED, "replicas": -1})
        assert bad.status_code == 400 and "replicas" in bad.json()["error"]
        until(lambda: len(_serving(control)) == 1, timeout=120)
        assert http.delete(f"/api/fleet/placements/{PLACED}").status_code == 204
        assert http.get("/api/fleet/placements").json() == {"placements": []}
        assert http.delete(f"/api/fleet/placements/{PLACED}").status_code == 404


def test_a_probe_answer_older_than_a_placement_does_not_unroute_it() -> None:
    member = RemoteMember(PeerAccess("n0", "blackroad", "http://n0", None, ()), OllamaPeer, 1)
    asked_at = time.monotonic()  # a probe goes out; the pull completes while it is in flight
    member.placed(PLACED)
    member.listed([SMOLLM2], asked_at)
    assert member.models == {SMOLLM2, PLACED}
    # A later answer is the node's word: a model it no longer lists is dropped.
    member.listed([SMOLLM2], time.monotonic())
    assert member.models == {SMOLLM2}
