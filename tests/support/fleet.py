"""Fleet tests' processes (SIGKILLed, restarted on the same port) and control-plane replicas."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.support.server import BLACKROAD, HTTP_TIMEOUT, free_port, server_env


@dataclass
class Node:
    """A server process on a fixed port: a BlackRoad node or a fake vLLM."""

    command: list[str]
    port: int
    log: Path
    env: dict[str, str] | None = None
    ready_path: str = "/"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> Node:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=out, stderr=out)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.command} did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no goodbye, sockets dropped mid-answer."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def fake_vllm(home: Path, model: str, token_ms: float = 5.0, reply: str | None = None) -> Node:
    """A fake vLLM serving ``model``; with ``reply``, every chat answer is that text."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tests.support.fake_vllm", "--port", str(port),
               "--model", model, "--token-ms", str(token_ms), "--log-requests"]  # fmt: skip
    if reply is not None:
        command += ["--reply", reply]
    return Node(command, port, home / "vllm.log", ready_path="/health")


def embedded_node(home: Path, **settings: str) -> Node:
    """``blackroad up`` with its own home: a BlackRoad machine to add as a peer."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = server_env(home, port, **settings)
    return Node([str(BLACKROAD), "up"], port, home / "server.log", env)


def joined(control: str, home: Path, name: str, token: str, **settings: str) -> Node:
    """``blackroad node`` joining ``control``, started: with the token, after a restart without."""
    port = free_port()
    home.mkdir(parents=True)
    env = server_env(home, port, heartbeat_seconds="1", **settings)
    command = [str(BLACKROAD), "node", "--join", control, "--name", name]
    node = Node([*command, "--token", token], port, home / "node.log", env)
    node.start(wait=False)
    node.command = command
    return node


def node_key(node: Node) -> str:
    """The key a joined node's server requires (kept in its ``node.json``)."""
    key: str = json.loads((node.log.parent / "node.json").read_text())["key"]
    return key


@contextlib.contextmanager
def started(nodes: list[Node]) -> Iterator[list[Node]]:
    """All of ``nodes`` running (started together), stopped when the block ends."""
    try:
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_ready()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


class Replica:
    """A replica of the control plane as a node sees it: an HTTP server in front of ``plane``.

    It forwards what it is sent, or, once ``fail()`` is called, answers every
    request 503 as a replica that lost its database (or a proxy with no
    replica behind it) does. It counts what it forwarded, by path.
    """

    def __init__(self, plane: Node) -> None:
        self.plane = plane
        self.forwarded: dict[str, int] = {}
        self.failing = False
        self.lock = threading.Lock()  # no forward is under way once fail() returns
        replica = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with replica.lock:
                    if replica.failing:
                        status, reply = 503, b'{"error": "no database"}'
                    else:
                        answer = httpx.post(
                            f"{replica.plane.url}{self.path}",
                            content=body,
                            headers={"Authorization": self.headers.get("Authorization", ""),
                                     "Content-Type": "application/json"},
                            timeout=HTTP_TIMEOUT,
                        )  # fmt: skip
                        status, reply = answer.status_code, answer.content
                        replica.forwarded[self.path] = replica.forwarded.get(self.path, 0) + 1
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self) -> datetime:
        """From now on every answer is a 503; the moment it began."""
        with self.lock:
            self.failing = True
            return datetime.now(UTC)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
