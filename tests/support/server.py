"""Starting real BlackRoad server processes for tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

BLACKROAD = Path(sys.executable).parent / "blackroad"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
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
def running_server(home: Path, **settings: str) -> Iterator[Server]:
    """A ``blackroad up`` subprocess on a free loopback port, ready to serve."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = home / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BLACKROAD), "up"], env=server_env(home, port, **settings), stdout=out, stderr=out
        )
    server = Server(process, home, port, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if not server.alive():
                raise RuntimeError(f"server exited:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(server.url, timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
