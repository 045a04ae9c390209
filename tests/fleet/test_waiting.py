"""No live node is a wait, not an error: requests and cut streams wait for a node to come back.

The peers are fake vLLM servers (``tests/support/fake_vllm.py``) counting
words, so a stream continued after a wait can be checked word for word. The
control plane here waits long (``fleet_queue_timeout``) so that a loaded
machine restarts a node well within the bound; the 503 past the bound is
``test_routing.py``'s, whose control plane waits 3 s.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fleet.test_routing import CHAT, MODEL, add, clear, counted
from tests.support.fleet import Node, fake_vllm, started
from tests.support.server import HTTP_TIMEOUT, Server, running_server
from tests.support.wait import until

WORDS = 40
STREAMS = 4  # streamed chats at once, as in the measurement


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("patient")
    with running_server(home, fleet_probe_seconds="0.5", fleet_queue_timeout="120") as server:
        yield server


def gauges(control: Server) -> dict[str, float]:
    """The fleet's gauges now: ``waiting``, and ``up:<node>`` for each node."""
    text = httpx.get(control.url + "/metrics", timeout=HTTP_TIMEOUT).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "blackroad_fleet_waiting":
                found["waiting"] = sample.value
            elif sample.name == "blackroad_node_up":
                found["up:" + sample.labels["node"]] = sample.value
    return found


def up(control: Server, node: Node) -> bool:
    return gauges(control).get(f"up:vllm-{node.port}") == 1.0


def continued(control: Server) -> int:
    """Streams the control plane has continued after their node failed."""
    return control.log.read_text().count(f"continuing {MODEL} on the next node")


def test_a_request_waits_for_the_only_node_to_come_back(patient: Server, tmp_path: Path) -> None:
    node = fake_vllm(tmp_path / "vllm", MODEL, token_ms=1.0)
    with started([node]):
        add(patient, node)
        try:
            node.kill()
            until(lambda: not up(patient, node), what="the router sees the node down")
            client = openai.OpenAI(base_url=patient.v1, api_key="unused", max_retries=0)
            outcome: list[object] = []

            def ask() -> None:
                try:
                    reply = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=3)
                    outcome.append(reply.choices[0].message.content)
                except openai.APIError as exc:
                    outcome.append(exc)

            asking = threading.Thread(target=ask)
            asking.start()
            until(lambda: gauges(patient).get("waiting") == 1.0 or not asking.is_alive())
            assert asking.is_alive(), outcome  # it waits: no 503 while the node is down
            with pytest.raises(openai.NotFoundError):  # a model no node serves does not wait
                client.chat.completions.create(model="no-such-model", messages=CHAT)
            node.start()
            asking.join()
            assert outcome == [counted(3)]
            assert gauges(patient)["waiting"] == 0.0
        finally:
            clear(patient)


def test_a_rolling_restart_with_both_nodes_down_loses_no_request_and_cuts_no_stream(
    patient: Server, tmp_path: Path
) -> None:
    first, second = nodes = [fake_vllm(tmp_path / f"vllm{i}", MODEL, 30.0) for i in range(2)]
    with started(nodes):
        add(patient, *nodes)
        try:
            texts, failures = _rolling_restart(patient, first, second)
        finally:
            clear(patient)
    assert failures == []
    assert len(texts) >= STREAMS and all(text == counted(WORDS) for text in texts)


def _rolling_restart(
    control: Server, first: Node, second: Node
) -> tuple[list[str], list[BaseException]]:
    """Streamed chats while ``first``, then ``second`` are killed, and started again in turn.

    Between the second's kill and the first's start no node serves the model.
    The texts of every stream, and every failure.
    """
    texts: list[str] = []
    failures: list[BaseException] = []
    words = [0]  # delivered, over every stream
    in_flight = [0]  # streams that have delivered a word and not ended
    lock = threading.Lock()
    done = threading.Event()

    def stream(client: openai.OpenAI) -> str:
        pieces: list[str] = []
        events = client.chat.completions.create(
            model=MODEL, messages=CHAT, max_tokens=WORDS, stream=True
        )
        try:
            for event in events:
                if event.choices and event.choices[0].delta.content:
                    with lock:
                        words[0] += 1
                        in_flight[0] += not pieces
                    pieces.append(event.choices[0].delta.content)
        finally:
            with lock:
                in_flight[0] -= bool(pieces)
        return "".join(pieces)

    def chat() -> None:
        client = openai.OpenAI(base_url=control.v1, api_key="unused", max_retries=0)
        while not done.is_set():
            try:
                texts.append(stream(client))
            except Exception as exc:  # every failure is the test's finding
                failures.append(exc)

    def delivered() -> int:
        with lock:
            return words[0]

    def streaming() -> bool:
        with lock:
            return in_flight[0] > 0

    chats = [threading.Thread(target=chat) for _ in range(STREAMS)]
    for thread in chats:
        thread.start()
    try:
        until(lambda: delivered() >= 2 * STREAMS and streaming())
        first.kill()
        mark = delivered()  # the streams go on on the second node
        until(lambda: delivered() > mark + 2 * STREAMS and streaming())
        cut = continued(control)
        second.kill()  # every node down, with streams under way
        first.start()
        until(lambda: up(control, first))
        second.start()
        until(lambda: up(control, second))
        went_on = "a stream cut by the second kill went on, or a request failed"
        until(lambda: continued(control) > cut or bool(failures), what=went_on)
        served = len(texts)
        until(lambda: len(texts) >= served + STREAMS or bool(failures))
    finally:
        done.set()
        for thread in chats:
            thread.join()
    return texts, failures
