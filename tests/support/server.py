"""Starting real BlackRoad server processes for tests."""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

BLACKROAD = Path(sys.executable).parent / "blackroad"
# Seconds an httpx request to a test server may take: on a loaded 2-core machine
# (the suite, a model loading, other servers starting) even a plain GET can wait
# far past httpx's 5 s default.
HTTP_TIMEOUT = 120


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, never one this process handed out before.

    Servers are started without waiting for each other: between a port being
    handed out and its server binding it, the kernel may offer it again.
    """
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    home: Path
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def alive(self) -> bool:
        return self.process.poll() is None


def server_env(home: Path, port: int, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKROAD_")}
    env.update(BLACKROAD_HOME=str(home), BLACKROAD_PORT=str(port))
    env.update({f"BLACKROAD_{k.upper()}": v for k, v in settings.items()})
    return env


@contextlib.contextmanager
def background(
    command: list[str],
    ready: str,
    log: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` in the background, once ``GET ready`` answers 200 (within ``timeout`` s).

    Stopped (terminated, killed if it will not stop) when the block ends.
    """
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{shlex.join(command)} exited:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(ready, timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{shlex.join(command)} did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serving(
    args: list[str], env: dict[str, str], port: int, log: Path, python: Path | None = None
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``blackroad ARGS`` in the background, once ``GET /`` on ``port`` answers 200.

    ``python`` runs the command with another interpreter (another environment).
    """
    command = [str(BLACKROAD), *args] if python is None else [str(python), str(BLACKROAD), *args]
    return background(command, f"http://127.0.0.1:{port}/", log, env)


@contextlib.contextmanager
def running_server(home: Path, **settings: str) -> Iterator[Server]:
    """A ``blackroad up`` subprocess on a free loopback port, ready to serve."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = home / "server.log"
    with serving(["up"], server_env(home, port, **settings), port, log) as process:
        yield Server(process, home, port, log)


def blackroad(
    *args: str, home: Path, port: int | None = None, stdin: str | None = None, **settings: str
) -> subprocess.CompletedProcess[str]:
    """Run the ``blackroad`` command with its own home and only the given settings."""
    return subprocess.run(
        [str(BLACKROAD), *args],
        env={**server_env(home, port or free_port(), **settings), "COLUMNS": "200"},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
