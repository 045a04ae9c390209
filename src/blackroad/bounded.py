"""Bounded work: untrusted computations in helper processes, limited in time, memory and output.

Some work is controlled by whoever sends a request or made a file: a chat
template from a request, a Modelfile or a GGUF; a JSON schema turned into a
grammar; an agent's arithmetic; the text of an uploaded document. Inside the
server nothing can stop such work once it runs (a Jinja sandbox caps
``range()`` but not ``{% set a = a ~ a %}`` in a loop; a C parser cannot be
interrupted), and on the event loop it would stall every other request. So it
runs here instead:

- in one of ``processes`` helper processes (``python -c`` this module's
  ``serve``), started when first needed and reused, each with an address-space
  limit (``RLIMIT_AS``) and no core dumps, no inherited file descriptors and an
  environment without BlackRoad's settings or keys; a pool of them per lane
  (``LANES``), so a document's minutes never hold up a chat's template;
- with a wall-clock limit per task: past it the process is killed and replaced
  and the caller gets ``LimitExceeded`` (422);
- with a limit on its answer, checked by the helper before it sends and by the
  server before it reads;
- off the event loop (``run`` waits in a thread of this pool's own), or from a
  thread that may block (``call``).

The wire is a pipe each way: a frame is a 4-byte length and a JSON header,
then a 4-byte length and raw bytes (a document, or extracted text: bytes need
no JSON escaping and decode in one fast call). JSON, never pickle: a helper
that untrusted input took over must not be able to run code in the server.

A task is a module-level function ``f(args: dict, data: bytes) -> result`` in
a ``blackroad`` module, named ``"module:function"``; a result is a JSON value,
or ``Blob(value, data)``. A ``BlackRoadError`` it raises reaches the caller as
the same class; any other exception becomes an ``InvalidRequest`` (the input
is untrusted, so its failure is the input's) naming the work.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from blackroad import errors
from blackroad.errors import InvalidRequest, LimitExceeded, QueueFull

_LENGTH = struct.Struct(">I")
# What a helper sends when it begins a task, its code loaded.
_STARTED = b"S"
# Raised with any change to the frames: a helper started after an upgrade
# refuses to speak to a server of another version.
_PROTOCOL = "1"
# How long a helper may take to start and load a task's code.
_STARTUP_SECONDS = 120.0
# An answer's header (the JSON part) may exceed a task's output limit by this
# much: room for an error message or a page table beside the text.
_HEADER_SLACK = 1 << 20
# Variables a helper inherits; everything else (keys, BLACKROAD_*) stays out.
_INHERITED = ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR")


@dataclass(frozen=True)
class Blob:
    """A task's result with raw bytes beside its JSON value."""

    value: Any
    data: bytes


@dataclass(frozen=True)
class Bounds:
    """How many helpers run at once, how much memory each may map, how long each work may take.

    The server sets these from its settings (``BLACKROAD_WORK_*``, ``*_SECONDS``).
    """

    processes: int = 2
    memory_bytes: int = 2 << 30
    # Tasks that may wait for a free helper; more are refused with 503.
    max_waiting: int = 64
    template_seconds: float = 5.0  # one rendering of a chat template
    grammar_seconds: float = 10.0  # one JSON schema to a grammar
    calculator_seconds: float = 2.0  # one expression of the agents' calculator
    extract_seconds: float = 120.0  # the text of one uploaded document


# -- the helper's side ---------------------------------------------------------


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


def _read_frame(stream: BinaryIO) -> tuple[dict[str, Any], bytes]:
    header = json.loads(_read_exact(stream, _LENGTH.unpack(_read_exact(stream, 4))[0]))
    data = _read_exact(stream, _LENGTH.unpack(_read_exact(stream, 4))[0])
    return header, data


def _frame(header: dict[str, Any], data: bytes = b"") -> bytes:
    encoded = json.dumps(header, ensure_ascii=False).encode()
    return b"".join((_LENGTH.pack(len(encoded)), encoded, _LENGTH.pack(len(data)), data))


def _error_header(exc: BaseException) -> dict[str, Any]:
    kind = type(exc).__name__ if isinstance(exc, errors.BlackRoadError) else "unexpected"
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return {"error": {"kind": kind, "type": type(exc).__name__, "message": message[:2000],
                      "param": getattr(exc, "param", None)}}  # fmt: skip


Task = Callable[[dict[str, Any], bytes], Any]


def _task(name: str) -> Task:
    """The function ``module:function``, imported (the helper's own code: not timed)."""
    module, _, function = name.partition(":")
    if module.split(".")[0] != "blackroad":
        raise ValueError(f"not a blackroad task: {module}")
    found: Task = getattr(importlib.import_module(module), function)
    return found


def _run_task(task: Task, header: dict[str, Any], data: bytes) -> tuple[bytes, bool]:
    """One task's answer frame, and whether this helper must end after sending it."""
    limit = int(header["output_bytes"])
    try:
        result = task(header["args"], data)
        value, blob = (result.value, result.data) if isinstance(result, Blob) else (result, b"")
        answer = _frame({"value": value}, blob)
    except MemoryError:  # past it the heap may be in any state: this helper ends
        return _frame({"error": {"kind": "memory"}}), True
    except RecursionError:
        return _frame({"error": {"kind": "recursion"}}), False
    except Exception as exc:
        return _frame(_error_header(exc)), False
    # A result's bytes are bounded by the limit, its JSON too unless bytes come with it
    # (then that JSON is a page table or a title beside them).
    if len(blob) > limit or len(answer) - len(blob) > (limit + _HEADER_SLACK if blob else limit):
        return _frame({"error": {"kind": "output"}}), False
    return answer, False


def _watch_parent(parent: int) -> None:
    """End this helper when the server is gone, even in the middle of a task."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def serve() -> None:
    """A helper's main loop: frames in on stdin, answers out on stdout, until EOF."""
    import resource

    memory, parent, protocol = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if protocol != _PROTOCOL:
        sys.exit(f"this helper speaks protocol {_PROTOCOL}, the server {protocol}")
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The protocol gets private copies of the pipes; anything a library prints
    # goes to stderr (discarded) and nothing can read the requests behind it.
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    while True:
        try:
            header, data = _read_frame(requests)
        except EOFError:
            return
        try:
            task = _task(str(header["task"]))
        except Exception as exc:
            answers.write(_STARTED + _frame(_error_header(exc)))
            answers.flush()
            continue
        # The task's time starts now, its code imported (the first time, under load,
        # that can take longer than the task may).
        answers.write(_STARTED)
        answers.flush()
        answer, retire = _run_task(task, header, data)
        del header, data
        answers.write(answer)
        answers.flush()
        if retire:
            return


# -- the server's side ---------------------------------------------------------


class _Helper:
    """One helper process and its pipes; used by one thread at a time."""

    def __init__(self, memory_bytes: int) -> None:
        env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
        command = "import blackroad.bounded as b; b.serve()"
        self.process = subprocess.Popen(
            [sys.executable, "-c", command, str(memory_bytes), str(os.getpid()), _PROTOCOL],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a signal to the server's group does not reach it
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.requests: IO[bytes] = self.process.stdin
        self.answers = self.process.stdout.fileno()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()

    def close(self) -> None:
        """Let an idle helper end by itself (EOF), killing it if it does not."""
        with contextlib.suppress(OSError):
            self.requests.close()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()

    def _read(self, size: int, deadline: float) -> bytes:
        parts: list[bytes] = []
        while size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.answers], [], [], left)
            if not ready:
                raise TimeoutError
            part = os.read(self.answers, min(size, 1 << 20))
            if not part:
                raise EOFError
            parts.append(part)
            size -= len(part)
        return b"".join(parts)

    def ask(self, request: bytes, seconds: float, limit: int) -> tuple[dict[str, Any], bytes]:
        """Send one task, read its answer within ``seconds``; raises what went wrong."""
        self.requests.write(request)
        self.requests.flush()
        if self._read(1, time.monotonic() + _STARTUP_SECONDS) != _STARTED:
            raise EOFError
        deadline = time.monotonic() + seconds
        size = _LENGTH.unpack(self._read(4, deadline))[0]
        if size > limit + _HEADER_SLACK:
            raise OverflowError(size)
        header = json.loads(self._read(size, deadline))
        size = _LENGTH.unpack(self._read(4, deadline))[0]
        if size > limit:
            raise OverflowError(size)
        return header, self._read(size, deadline)


class Pool:
    """Helper processes for bounded work, shared by every caller in this process."""

    def __init__(self, bounds: Bounds | None = None) -> None:
        self.bounds = bounds or Bounds()
        self._idle: list[_Helper] = []
        self._started = 0  # helpers alive, idle or busy
        self._waiting = 0
        self._closed = False
        self._lock = threading.Condition()
        self._executor = ThreadPoolExecutor(
            self.bounds.processes + self.bounds.max_waiting, thread_name_prefix="bounded"
        )

    def _take(self) -> _Helper:
        with self._lock:
            if self._waiting >= self.bounds.max_waiting:
                raise QueueFull("too much untrusted work is waiting; retry later", 2)
            self._waiting += 1
            try:
                while not self._idle and self._started >= self.bounds.processes:
                    self._lock.wait()
                if self._closed:
                    raise RuntimeError("the bounded-work pool is closed")
                if self._idle:
                    return self._idle.pop()
                self._started += 1
            finally:
                self._waiting -= 1
        try:
            return _Helper(self.bounds.memory_bytes)
        except BaseException:
            self._give_back(None)
            raise

    def _give_back(self, helper: _Helper | None) -> None:
        with self._lock:
            if helper is None:
                self._started -= 1
            else:
                self._idle.append(helper)
            self._lock.notify()

    def call(
        self,
        task: str,
        args: dict[str, Any],
        data: bytes = b"",
        *,
        seconds: float,
        output_bytes: int,
        what: str,
        param: str | None = None,
    ) -> Any:
        """Run ``task`` in a helper, blocking this thread; ``Blob`` results come back as such.

        ``what`` names the work in error messages ("the chat template"),
        ``param`` the request field they point at.
        """
        request = _frame({"task": task, "args": args, "output_bytes": output_bytes}, data)
        helper = self._take()
        try:
            header, blob = helper.ask(request, seconds, output_bytes)
        except TimeoutError:
            helper.kill()
            self._give_back(None)
            raise LimitExceeded(f"{what} took longer than {seconds:g} s", param) from None
        except OverflowError:
            helper.kill()
            self._give_back(None)
            raise LimitExceeded(f"{what} produced more than {output_bytes} bytes", param) from None
        except (EOFError, OSError, ValueError):  # it died: a crash, or memory C code could not get
            code = helper.process.poll()
            helper.kill()
            self._give_back(None)
            ended = f"signal {-code}" if code is not None and code < 0 else f"status {code}"
            raise LimitExceeded(
                f"{what} could not be completed within this server's limits (its process "
                f"ended with {ended})",
                param,
            ) from None
        except BaseException:
            helper.kill()
            self._give_back(None)
            raise
        error = header.get("error")
        if error is not None and error["kind"] == "memory":
            helper.kill()  # it ends by itself after a MemoryError; reap it now
            self._give_back(None)
        else:
            self._give_back(helper)
        if error is not None:
            raise _failure(error, what, param, self.bounds.memory_bytes, output_bytes)
        return Blob(header["value"], blob) if blob else header["value"]

    async def run(
        self,
        task: str,
        args: dict[str, Any],
        data: bytes = b"",
        *,
        seconds: float,
        output_bytes: int,
        what: str,
        param: str | None = None,
    ) -> Any:
        """``call`` from the event loop, waiting in one of the pool's own threads."""

        def work() -> Any:
            return self.call(
                task, args, data, seconds=seconds, output_bytes=output_bytes, what=what,
                param=param,
            )  # fmt: skip

        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def close(self) -> None:
        """End every idle helper; busy ones end when their caller gives them back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._lock.notify_all()
        for helper in idle:
            helper.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _failure(
    error: dict[str, Any], what: str, param: str | None, memory_bytes: int, output_bytes: int
) -> errors.BlackRoadError:
    kind = error["kind"]
    if kind == "memory":
        return LimitExceeded(f"{what} needed more than {memory_bytes} bytes of memory", param)
    if kind == "output":
        return LimitExceeded(f"{what} produced more than {output_bytes} bytes", param)
    if kind == "recursion":
        return InvalidRequest(f"{what} recursed too deeply", param)
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, errors.InvalidRequest):
        return cls(error["message"], error["param"])
    if cls in (errors.PayloadTooLarge, errors.Forbidden, errors.NotFound, errors.Conflict):
        return cls(error["message"])
    return InvalidRequest(f"{what} failed: {error['type']}: {error['message'][:300]}", param)


# One pool per lane, so that long work (a document's text: minutes for a large
# PDF) never holds the helpers that short work (a chat's template) waits for.
LANES = ("short", "documents")
_bounds = Bounds()
_pools: dict[str, Pool] = {}
_pools_lock = threading.Lock()


def configure(bounds: Bounds) -> None:
    """Use ``bounds`` from now on (the server calls this once, from its settings)."""
    global _bounds
    with _pools_lock:
        _bounds = bounds
        previous = list(_pools.values())
        _pools.clear()
    for old in previous:
        old.close()


def pool(lane: str = "short") -> Pool:
    """The process's pool for ``lane``, with the configured bounds (else the defaults)."""
    assert lane in LANES, lane
    with _pools_lock:
        found = _pools.get(lane)
        if found is None:
            found = _pools[lane] = Pool(_bounds)
        return found


def close() -> None:
    """End every helper of every lane (the server's last act)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for each in pools:
        each.close()


atexit.register(close)
