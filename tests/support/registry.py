"""Starting real ``blackroad registry serve`` processes, and running the CLI, for tests."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.server import free_port, server_env, serving


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
    args = ["registry", "serve", str(root), "--port", str(port), *flags]
    with serving(args, server_env(home, port, **settings), port, log) as process:
        yield RegistryServer(process, root, port, log)
