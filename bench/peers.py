"""The servers ``bench/serving.py`` measures, and how it builds and starts them.

- **BlackRoad**: ``blackroad up`` with a temporary ``BLACKROAD_HOME`` and only
  the settings the bench gives it (``tests/support/server.py`` strips every
  other ``BLACKROAD_*`` variable and logs to ``server.log`` in the home).
- **llama-cpp-python**: its own OpenAI-compatible server,
  ``python -m llama_cpp.server``, from the installed llama-cpp-python. It needs
  packages BlackRoad does not (``pip install -e '.[bench]'``).
- **llama-server**: llama.cpp's server, built from the llama.cpp source
  vendored in the sdist of the installed llama-cpp-python version, so that
  both peers and BlackRoad run the same llama.cpp. The sdist is fetched with
  ``pip download``, ``vendor/llama.cpp`` extracted, and only the
  ``llama-server`` target built with CMake into
  ``~/.cache/blackroad/llama-server/<version>-<key>/`` (``$XDG_CACHE_HOME``
  if set), where later runs find it. The CPU flags are those
  ``scripts/dev.py`` gives llama-cpp-python's own build (explicit x86
  features, never ``-march=native``, no AMX), so the three servers run the
  same kernels; the key hashes the version, the machine and every flag.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import shlex
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.overhead import ROOT

CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "blackroad" / "llama-server"
)
# Everything but llama-server and what it links stays off; no download at build time.
LEAN_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)
# What ``python -m llama_cpp.server`` imports beyond BlackRoad's own dependencies.
SERVER_MODULES = {
    "sse_starlette": "sse-starlette",
    "starlette_context": "starlette-context",
    "pydantic_settings": "pydantic-settings",
}
START_TIMEOUT_S = 300.0

Say = Callable[[str], None]


@dataclass(frozen=True)
class Peer:
    """A running server: its name in tables, base URL, pid and log file."""

    name: str
    url: str
    pid: int
    log: Path


def llama_cpp_version() -> str:
    return importlib.metadata.version("llama-cpp-python")


def missing_server_packages() -> list[str]:
    """The distributions ``llama_cpp.server`` needs that are not installed."""
    return [
        dist for module, dist in SERVER_MODULES.items() if importlib.util.find_spec(module) is None
    ]


def dev_cmake_args() -> list[str]:
    """The CPU flags ``scripts/dev.py`` builds llama-cpp-python with, on this machine."""
    spec = importlib.util.spec_from_file_location("blackroad_dev", ROOT / "scripts" / "dev.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot load scripts/dev.py")
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    return shlex.split(str(dev.llama_cmake_args()))


def _run(command: list[str], log: Path, say: Say) -> None:
    say(f"$ {shlex.join(command)}")
    with log.open("a") as out:
        out.write(f"\n$ {shlex.join(command)}\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{command[0]} failed ({done.returncode}); end of {log}:\n{tail}")


def _fetch_source(version: str, into: Path, log: Path, say: Say) -> Path:
    """``vendor/llama.cpp`` of the llama-cpp-python sdist, extracted under ``into``."""
    with tempfile.TemporaryDirectory(prefix="blackroad-sdist-") as tmp:
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "download"]
        options = ["--no-deps", "--no-binary", ":all:", "-d", tmp]
        _run([*pip, f"llama-cpp-python=={version}", *options], log, say)
        archives = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if not archives:
            raise RuntimeError(f"pip download left no llama-cpp-python sdist in {tmp}")
        with tarfile.open(archives[0]) as sdist:
            top = sdist.getnames()[0].split("/", 1)[0]
            prefix = f"{top}/vendor/llama.cpp/"
            members = [m for m in sdist.getmembers() if m.name.startswith(prefix)]
            if not members:
                raise RuntimeError(f"{archives[0].name} has no vendor/llama.cpp")
            sdist.extractall(into, members=members, filter="data")
    return into / top / "vendor" / "llama.cpp"


def build_llama_server(jobs: int, say: Say = print) -> Path:
    """llama-server for the installed llama-cpp-python: built once, then found in the cache."""
    version = llama_cpp_version()
    flags = [*dev_cmake_args(), *LEAN_FLAGS]
    key = hashlib.sha256(f"{version} {platform.machine()} {shlex.join(flags)}".encode())
    home = CACHE / f"{version}-{key.hexdigest()[:16]}"
    binary = home / "build" / "bin" / "llama-server"
    stamp = home / "built"
    if stamp.exists() and binary.exists():
        return binary
    say(f"building llama-server from llama-cpp-python {version}'s llama.cpp into {home}")
    say("(only once for this version and these flags; several minutes on a small machine)")
    home.mkdir(parents=True, exist_ok=True)
    log = home / "build.log"
    log.write_text(f"flags: {shlex.join(flags)}\n")
    source = home / "src" / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not (source / "CMakeLists.txt").exists():
        source = _fetch_source(version, home / "src", log, say)
    generator = ["-G", "Ninja"] if _has("ninja") else []
    build = home / "build"
    _run(["cmake", "-S", str(source), "-B", str(build), *generator, *flags], log, say)
    _run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)], log, say)
    if not binary.exists():
        raise RuntimeError(f"the build finished without {binary}; see {log}")
    stamp.write_text(f"{shlex.join(flags)}\n")
    return binary


def _has(program: str) -> bool:
    return any((Path(d) / program).exists() for d in os.environ.get("PATH", "").split(os.pathsep))


def free_port() -> int:
    from tests.support.server import free_port as port

    return port()


def _process(
    command: list[str], ready: str, log: Path
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``command`` in the background, once GET ``ready`` answers 200; stopped at the end."""
    from tests.support.server import background

    return background(command, ready, log, timeout=START_TIMEOUT_S)


@contextlib.contextmanager
def blackroad(threads: int, parallel: int, ctx: int) -> Iterator[Peer]:
    """``blackroad up``: a temporary home, ``parallel`` sequences keeping their last prompts."""
    if str(ROOT) not in sys.path:  # run as a script rather than with -m
        sys.path.insert(0, str(ROOT))
    from tests.support.server import running_server

    with (
        tempfile.TemporaryDirectory(prefix="blackroad-bench-") as home,
        running_server(
            Path(home),
            num_threads=str(threads),
            num_parallel=str(parallel),
            num_cached="0",  # like llama-server: each slot keeps its last prompt
            num_ctx=str(ctx),
        ) as server,
    ):
        yield Peer("BlackRoad", server.url, server.process.pid, server.log)


@contextlib.contextmanager
def llama_cpp_python(model: Path, threads: int, ctx: int, logs: Path) -> Iterator[Peer]:
    """``python -m llama_cpp.server``: one ``Llama``, requests served one at a time, in turn."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--n_ctx",
        str(ctx),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        # Its default, True, makes each new request cut the stream being served short.
        "--interrupt_requests",
        "False",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    log = logs / "llama-cpp-python.log"
    with _process(command, f"{url}/v1/models", log) as process:
        yield Peer("llama-cpp-python", url, process.pid, log)


@contextlib.contextmanager
def llama_server(
    binary: Path, model: Path, threads: int, parallel: int, ctx: int, logs: Path
) -> Iterator[Peer]:
    """llama.cpp's ``llama-server`` with ``parallel`` slots sharing ``ctx * parallel`` cells."""
    port = free_port()
    command = [
        str(binary),
        "-m",
        str(model),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "-np",
        str(parallel),
        "-c",
        str(ctx * parallel),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    log = logs / "llama-server.log"
    with _process(command, f"{url}/health", log) as process:
        yield Peer("llama-server", url, process.pid, log)
