"""The helper processes of ``blackroad.bounded``: real processes, real untrusted templates.

Each bound holds and costs only the task that passed it: a task past its time
is killed with its process and the next one gets a fresh helper; past its
memory or its output it is refused; errors keep their class; no more helpers
run than allowed, no more tasks wait than allowed; a helper sees none of the
server's settings and ends with the server, even in the middle of a task.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blackroad import bounded
from blackroad.bounded import Bounds, Pool
from blackroad.errors import InvalidRequest, LimitExceeded, QueueFull
from blackroad.models.templates import RENDER_TASK
from tests.support import hostile
from tests.support.wait import until

HELLO = [{"role": "user", "content": "hello"}]


def rendering(source: str, messages: list[dict[str, Any]] = HELLO) -> dict[str, Any]:
    return {"source": source, "messages": messages, "add_generation_prompt": True,
            "bos_token": "<s>", "eos_token": "</s>"}  # fmt: skip


def render(pool: Pool, source: str, seconds: float = 5, output_bytes: int = 1 << 20) -> Any:
    return pool.call(
        RENDER_TASK, rendering(source), seconds=seconds, output_bytes=output_bytes,
        what="the template", param="template",
    )  # fmt: skip


def helpers(parent: int | None = None) -> set[int]:
    """The live helper processes of ``parent`` (this test process by default)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(status.split("PPid:")[1].split()[0])
        alive = "State:\tZ" not in status
        if ppid == (parent or os.getpid()) and b"blackroad.bounded" in command and alive:
            found.add(int(entry.name))
    return found


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[Pool]:
    monkeypatch.setenv("BLACKROAD_API_KEY", "br-a-secret-the-helpers-must-not-see")
    # The process's shared pools (left by earlier tests) end first, so every
    # helper ``helpers()`` counts is this pool's.
    bounded.close()
    until(lambda: not helpers())
    work = Pool(Bounds(processes=2, memory_bytes=512 << 20, max_waiting=2))
    yield work
    work.close()
    until(lambda: not helpers())


def test_a_task_past_its_time_is_killed_and_the_next_gets_a_fresh_helper(pool: Pool) -> None:
    assert render(pool, "{{ messages[0].content }}") == "hello"
    [first] = helpers()
    with pytest.raises(LimitExceeded) as refused:
        render(pool, hostile.NESTED_LOOPS, seconds=1)
    assert refused.value.message == "the template took longer than 1 s"
    assert refused.value.status_code == 422 and refused.value.param == "template"
    assert first not in helpers()
    assert render(pool, "{{ messages[0].content }}!") == "hello!"
    assert first not in helpers() and len(helpers()) == 1


def test_a_task_past_its_memory_is_refused_and_its_helper_ends(pool: Pool) -> None:
    with pytest.raises(LimitExceeded, match=r"^the template needed more than 536870912 bytes"):
        render(pool, hostile.CONCAT_DOUBLING, seconds=60)
    assert not helpers()
    assert render(pool, "{{ bos_token }}") == "<s>"


def test_an_answer_past_its_output_limit_is_refused(pool: Pool) -> None:
    flood = '{% for i in range(100000) %}{{ "x" * 100 }}{% endfor %}'
    with pytest.raises(LimitExceeded, match=r"^the template produced more than 1000000 bytes"):
        render(pool, flood, output_bytes=1_000_000)
    assert render(pool, "ok") == "ok"


def test_errors_keep_their_class_and_recursion_is_an_invalid_request(pool: Pool) -> None:
    with pytest.raises(InvalidRequest) as rejected:
        render(pool, "{{ raise_exception('no system messages') }}")
    assert type(rejected.value) is InvalidRequest
    assert rejected.value.param == "messages"
    assert rejected.value.message.endswith("rejected these messages: no system messages")
    with pytest.raises(InvalidRequest, match=r"^the template recursed too deeply$"):
        render(pool, hostile.MACRO_RECURSION)


def test_no_more_helpers_run_and_no_more_tasks_wait_than_allowed(pool: Pool) -> None:
    outcomes: list[BaseException] = []

    def loop_forever() -> None:
        try:
            render(pool, hostile.NESTED_LOOPS, seconds=3)
        except BaseException as exc:  # collected for the asserts
            outcomes.append(exc)

    running = [threading.Thread(target=loop_forever) for _ in range(4)]
    for thread in running:
        thread.start()
    until(lambda: pool._waiting == 2)
    with pytest.raises(QueueFull):
        render(pool, "ok")
    while any(thread.is_alive() for thread in running):
        assert len(helpers()) <= 2
        time.sleep(0.05)
    assert [type(exc) for exc in outcomes] == [LimitExceeded] * 4


def test_a_helper_sees_none_of_the_servers_settings(pool: Pool) -> None:
    render(pool, "ok")
    for pid in helpers():
        environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not [v for v in environment if v.startswith(b"BLACKROAD_")]


def test_a_helper_ends_with_the_server_even_mid_task(tmp_path: Path) -> None:
    script = f"""
import threading
from blackroad.bounded import Pool
from blackroad.models.templates import RENDER_TASK
request = {{"source": {hostile.NESTED_LOOPS!r}, "messages": [], "add_generation_prompt": True,
            "bos_token": "", "eos_token": ""}}
threading.Thread(target=lambda: Pool().call(RENDER_TASK, request, seconds=3600,
                 output_bytes=100, what="x")).start()
print("started", flush=True)
threading.Event().wait()
"""
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert server.stdout is not None
    assert server.stdout.readline() == b"started\n"

    until(lambda: bool(helpers(server.pid)))
    [helper] = helpers(server.pid)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()

    def ended() -> bool:
        try:
            return "State:\tZ" in Path(f"/proc/{helper}/status").read_text()
        except FileNotFoundError:
            return True

    until(ended)
