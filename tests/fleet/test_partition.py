"""A network partition: a node behind a network namespace loses its link; the fleet routes around.

The node (a fake vLLM) runs in a namespace of the test's own, joined to
this one by a veth pair with addresses of its own. Cutting the link inside
the namespace sends no FIN or RST: a stream in flight just stops. The
control plane's probes notice, its breaker opens, and the stream goes on
from the other node. Needs root and ``ip``; skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fleet.test_routing import CHAT, MODEL, counted
from tests.support.fleet import Node, fake_vllm, started
from tests.support.server import HTTP_TIMEOUT, Server, free_port, running_server
from tests.support.wait import until

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and ip netns"
)
WORDS = 60


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def namespace() -> Iterator[tuple[str, str, str]]:
    """A namespace joined by a veth pair: its name, its link's name, and its address."""
    tag = os.getpid() % 100_000
    name, outside, inside = f"brpart{tag}", f"brh{tag}", f"brn{tag}"
    net = f"10.213.{tag % 250}"
    ip("netns", "add", name)
    try:
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", name)
        ip("addr", "add", f"{net}.1/30", "dev", outside)
        ip("link", "set", outside, "up")
        for args in (["addr", "add", f"{net}.2/30", "dev", inside], ["link", "set", inside, "up"],
                     ["link", "set", "lo", "up"]):  # fmt: skip
            ip("netns", "exec", name, "ip", *args)
        yield name, inside, f"{net}.2"
    finally:
        subprocess.run(["ip", "link", "del", outside], capture_output=True)
        ip("netns", "del", name)


def test_a_partitioned_node_is_routed_around_and_rejoins(
    namespace: tuple[str, str, str], tmp_path: Path
) -> None:
    name, link, address = namespace
    port = free_port()
    home = tmp_path / "cut-off"
    home.mkdir()
    cut_off = Node(
        ["ip", "netns", "exec", name, sys.executable, "-m", "tests.support.fake_vllm",
         "--host", address, "--port", str(port), "--model", MODEL, "--token-ms", "40",
         "--log-requests"],
        port, home / "vllm.log", ready_path="/health",
    )  # fmt: skip
    cut_off_url = f"http://{address}:{port}"
    steady = fake_vllm(tmp_path / "steady", MODEL, token_ms=40)
    with (
        running_server(tmp_path / "control", fleet_probe_seconds="0.5") as control,
        started([steady]),
    ):
        cut_off.start(wait=False)
        try:
            until(lambda: _answers(cut_off_url + "/health"), timeout=60)
            _add(control, "cut-off", cut_off_url)  # first: an idle fleet sends it the first job
            _add(control, "steady", steady.url)
            client = openai.OpenAI(base_url=control.v1, api_key="unused", max_retries=0)
            pieces: list[str] = []
            for event in client.chat.completions.create(
                model=MODEL, messages=CHAT, max_tokens=WORDS, stream=True
            ):
                if event.choices and event.choices[0].delta.content:
                    pieces.append(event.choices[0].delta.content)
                    if len(pieces) == 5:
                        assert "request /v1/chat" in cut_off.log.read_text()
                        ip("netns", "exec", name, "ip", "link", "set", link, "down")
            assert "".join(pieces) == counted(WORDS)  # resumed on the other side of the cut
            until(lambda: _state(control, "cut-off") == "down")
            reply = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=3)
            assert reply.choices[0].message.content == counted(3)
            ip("netns", "exec", name, "ip", "link", "set", link, "up")
            until(lambda: _state(control, "cut-off") == "up", timeout=60)
        finally:
            cut_off.kill()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _add(control: Server, name: str, url: str) -> None:
    body = {"name": name, "kind": "openai", "url": url}
    added = httpx.post(control.url + "/api/fleet/nodes", json=body, timeout=30)
    assert added.status_code == 201, added.text


def _state(control: Server, name: str) -> str:
    nodes = httpx.get(control.url + "/api/fleet", timeout=HTTP_TIMEOUT).json()["nodes"]
    return str(next(n["state"] for n in nodes if n["name"] == name))
