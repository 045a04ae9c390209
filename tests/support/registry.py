"""Starting real ``blackroad registry serve`` processes, and running the CLI, for tests."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.server import BLACKROAD, free_port, server_env


@dataclass
class RegistryServer:
    process: subprocess.Popen[bytes]
    root: Path
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, as in a crash or a pulled cable."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


@contextlib.contextmanager
def running_registry(root: Path, *flags: str, **settings: str) -> Iterator[RegistryServer]:
    """``blackroad registry serve ROOT`` on a free loopback port, ready to serve."""
    port = free_port()
    home = root.parent / f"registry-home-{port}"
    home.mkdir(parents=True, exist_ok=True)
    log = home / "registry.log"
    command = [str(BLACKROAD), "registry", "serve", str(root), "--port", str(port), *flags]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=server_env(home, port, **settings), stdout=out, stderr=out
        )
    server = RegistryServer(process, root, port, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if not server.alive():
                raise RuntimeError(f"registry exited:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(server.url, timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"registry did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        if server.alive():
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def blackroad(*args: str, home: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run the ``blackroad`` command with only the given BLACKROAD_* settings."""
    return subprocess.run(
        [str(BLACKROAD), *args],
        env={**server_env(home, free_port(), **settings), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
