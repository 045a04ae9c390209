"""Work a request or a file controls is bounded: templates, JSON schemas, the calculator, documents.

One server, its helpers' time limits shortened so that each refusal comes in
seconds. Every hostile input (``tests/support/hostile.py``) gets its 4xx in its
API's own error format (a tool's error result for the calculator), the server
stays alive and serves the next request, and, in one test, while they all run
at once ``/health/live`` keeps answering and another user's chat keeps
streaming.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import ollama
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import SMOLLM2
from tests.support import hostile
from tests.support.fleet import Node, fake_vllm
from tests.support.server import Server, running_server

KEY = "bounded-work-shared-key-0123456789"
INJECTED = "injected:1b"  # the model whose answers a prompt injection wrote
SETTINGS = {
    "api_key": KEY,
    "template_seconds": "3",
    "grammar_seconds": "5",
    "calculator_seconds": "2",
    "extract_seconds": "5",
    "work_memory_bytes": str(1 << 30),
}
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hi."}]


@dataclass(frozen=True)
class World:
    server: Server
    peer: Node

    def http(self, key: str = KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )

    def openai(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.server.v1, api_key=key, max_retries=0, timeout=120)

    def ollama(self) -> ollama.Client:
        return ollama.Client(
            host=self.server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120
        )

    def still_serving(self) -> None:
        """The server is up and answers a chat."""
        assert self.server.alive(), self.server.log.read_text()[-3000:]
        reply = self.openai().chat.completions.create(model=SMOLLM2, messages=HI, max_tokens=4)
        assert reply.choices[0].message.content


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("bounded")
    reply = hostile.tool_call("calculator", {"expression": hostile.SLOW_EXPRESSION})
    peer = fake_vllm(home / "peer", INJECTED, reply=reply).start()
    try:
        with running_server(home / "server", **SETTINGS) as server:
            world = World(server, peer)
            with world.http() as http:
                added = http.post(
                    "/api/fleet/nodes", json={"name": "peer", "kind": "openai", "url": peer.url}
                )
                assert added.status_code == 201, added.text
            yield world
    finally:
        peer.stop()


# -- chat templates ------------------------------------------------------------


@pytest.mark.parametrize("name", hostile.TEMPLATES)
def test_a_request_template_that_would_not_end_is_refused(world: World, name: str) -> None:
    with pytest.raises(ollama.ResponseError) as refused:
        world.ollama().generate(model=SMOLLM2, prompt="hi", template=hostile.TEMPLATES[name])
    assert refused.value.status_code in (400, 422)
    assert "the request's template" in refused.value.error
    world.still_serving()


def test_a_modelfile_template_that_would_not_end_is_refused_at_create(world: World) -> None:
    modelfile = f'FROM {SMOLLM2}\nTEMPLATE """{hostile.NESTED_LOOPS}"""\n'
    with world.http() as http:
        created = http.post(
            "/api/create", json={"model": "looping", "modelfile": modelfile, "stream": False}
        )
        assert created.status_code == 422, created.text
        assert created.json() == {"error": "the Modelfile's template took longer than 3 s"}
        assert http.post("/api/show", json={"model": "looping"}).status_code == 404
    world.still_serving()


@pytest.fixture(scope="module")
def hostile_model(world: World, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model whose GGUF's own chat template doubles a string without end."""
    path = tmp_path_factory.mktemp("gguf") / "doubling.gguf"
    data = hostile.gguf_with_template(path, hostile.CONCAT_DOUBLING)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with world.http() as http:
        assert http.post(f"/api/blobs/{digest}", content=data).status_code == 201
        created = http.post(
            "/api/create",
            json={"model": "doubling", "files": {"doubling.gguf": digest}, "stream": False},
        )
        assert created.status_code == 200, created.text
    return "doubling:latest"


def test_a_gguf_chat_template_that_would_not_end_is_refused(
    world: World, hostile_model: str
) -> None:
    with pytest.raises(ollama.ResponseError) as refused:
        world.ollama().chat(model=hostile_model, messages=HI)
    assert refused.value.status_code == 422  # past its memory, or its time doubling towards it
    assert refused.value.error.startswith("the model's chat template ")
    with pytest.raises(openai.UnprocessableEntityError) as unprocessable:
        world.openai().chat.completions.create(model=hostile_model, messages=HI)
    error = unprocessable.value.body
    assert isinstance(error, dict)
    assert error["code"] == "limit_exceeded" and error["param"] == "messages"
    world.still_serving()


# -- JSON schemas ---------------------------------------------------------------


def schema_refusal(world: World, api: str, schema: dict[str, Any]) -> tuple[str, str | None]:
    """The message and the field named by the refusal of ``schema`` sent the ``api`` way."""
    # A tool's parameters are an object (Ollama's client insists): the schema is a property's.
    parameters = {"type": "object", "properties": {"value": schema}}
    function: Any = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    if api == "ollama-format":
        with pytest.raises(ollama.ResponseError) as failed:
            world.ollama().chat(model=SMOLLM2, messages=HI, format=schema)
        assert failed.value.status_code == 400
        return failed.value.error, None
    if api == "ollama-tools":  # Ollama's client drops the keywords it does not model
        with world.http() as http:
            chat = {"model": SMOLLM2, "messages": HI, "tools": [function], "stream": False}
            answer = http.post("/api/chat", json=chat)
        assert answer.status_code == 400
        return answer.json()["error"], None
    fields = {"response_format": response_format} if api == "openai-response_format" else {
        "tools": [function]}  # fmt: skip
    with pytest.raises(openai.BadRequestError) as refused:
        world.openai().chat.completions.create(model=SMOLLM2, messages=HI, **fields)
    body = refused.value.body
    assert isinstance(body, dict)
    return body["message"], body["param"]


PARAMS = {
    "openai-response_format": "response_format",
    "openai-tools": "tools[0].function.parameters",
    "ollama-format": None,
    "ollama-tools": None,
}


@pytest.mark.parametrize("api", PARAMS)
@pytest.mark.parametrize("name", hostile.SCHEMAS)
def test_a_schema_whose_grammar_would_be_too_large_is_refused_naming_its_keyword(
    world: World, api: str, name: str
) -> None:
    schema, keyword = hostile.SCHEMAS[name]
    message, param = schema_refusal(world, api, schema)
    assert keyword in message and message.startswith("JSON schema")
    assert param == PARAMS[api]
    assert world.server.alive()


def test_the_server_serves_schemas_within_the_limits_after_refusals(world: World) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 1000}},
              "required": ["name"]}  # fmt: skip
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    reply = world.openai().chat.completions.create(
        model=SMOLLM2, messages=HI, max_tokens=8, response_format=response_format
    )
    assert (reply.choices[0].message.content or "").startswith("{")
    world.still_serving()


# -- the agents' calculator -------------------------------------------------------


def run_injected_calculation(world: World) -> list[dict[str, Any]]:
    """An agent whose model (its answers written by an injection) asks for ``round(1, -10**8)``.

    Returns the run's tool steps once it ended.
    """
    with world.http() as http:
        agent = http.post("/api/agents", json={"name": f"calc-{threading.get_ident()}",
                                               "model": INJECTED, "tools": ["calculator"],
                                               "max_steps": 2})  # fmt: skip
        assert agent.status_code == 201, agent.text
        run = http.post(f"/api/agents/{agent.json()['id']}/runs", json={"input": "Round it."})
        assert run.status_code == 201, run.text
        finished = wait_for(lambda: finished_run(http, run.json()["id"]))
    return [step for step in finished["steps"] if step["kind"] == "tool"]


def finished_run(http: httpx.Client, run_id: int) -> dict[str, Any] | None:
    run: dict[str, Any] = http.get(f"/api/agents/runs/{run_id}").json()
    return run if run["status"] not in ("running", "waiting") else None


def wait_for(found: Callable[[], Any]) -> Any:
    """``found()`` once it is not None; asked again and again (each asking has its timeout)."""
    while (result := found()) is None:
        threading.Event().wait(0.1)
    return result


def test_an_injected_calculation_without_end_is_the_tools_error(world: World) -> None:
    steps = run_injected_calculation(world)
    assert steps, "the model's call reached the calculator"
    for step in steps:
        assert step["name"] == "calculator"
        assert step["input"] == {"expression": hostile.SLOW_EXPRESSION}
        assert step["output"]["is_error"] is True
        assert step["output"]["content"] == "round() takes at most 308 digits."
    world.still_serving()


# -- documents -------------------------------------------------------------------


def upload(world: World, base: int, name: str, data: bytes, key: str = KEY) -> httpx.Response:
    with world.http(key) as http:
        return http.post(f"/api/kb/{base}/documents", files=[("files", (name, data))])


@pytest.fixture(scope="module")
def base(world: World) -> int:
    with world.http() as http:
        created = http.post("/api/kb", json={"name": "hostile"})
        assert created.status_code == 201, created.text
    return int(created.json()["id"])


EXPECTED = {
    "bomb.docx": (413, "bomb.docx: its part word/document.xml inflates"),
    "page.html": (422, "reading the text of page.html took longer than 5 s"),
    "report.pdf": (422, "reading the text of report.pdf took longer than 5 s"),
}


@pytest.mark.parametrize("name", hostile.DOCUMENTS)
def test_a_document_that_would_take_without_end_to_read_is_refused(
    world: World, base: int, name: str
) -> None:
    refused = upload(world, base, name, hostile.DOCUMENTS[name]())
    status, message = EXPECTED[name]
    assert refused.status_code == status, refused.text
    assert refused.json()["error"].startswith(message)
    assert upload(world, base, "fine.txt", b"An ordinary note.").status_code == 200
    world.still_serving()


# -- all at once -------------------------------------------------------------------


def test_while_hostile_work_runs_the_server_stays_live_and_others_stream(world: World) -> None:
    """Templates, schemas, a calculation and documents at once, twice over; meanwhile
    ``/health/live`` answers every time and another user's chat streams to its end."""
    with world.http() as http:
        assert http.post("/api/admin/users", json={"name": "bystander"}).status_code == 201
        made = http.post("/api/admin/keys", json={"user": "bystander"})
        assert made.status_code == 201, made.text
        base_id = http.post("/api/kb", json={"name": "busy"}).json()["id"]
    bystander = made.json()["key"]
    outcomes: dict[str, Any] = {}

    def template(index: int) -> None:
        with pytest.raises(ollama.ResponseError) as refused:
            world.ollama().generate(model=SMOLLM2, prompt="hi", template=hostile.NESTED_LOOPS)
        outcomes[f"template {index}"] = refused.value.status_code

    def schema(index: int) -> None:
        too_long = hostile.SCHEMAS["minLength"][0]
        outcomes[f"schema {index}"] = schema_refusal(world, "openai-response_format", too_long)

    def calculation(index: int) -> None:
        steps = run_injected_calculation(world)
        outcomes[f"calculator {index}"] = [step["output"]["is_error"] for step in steps]

    def document(index: int) -> None:
        answer = upload(world, base_id, "page.html", hostile.quadratic_html())
        outcomes[f"document {index}"] = answer.status_code

    hostiles = [
        threading.Thread(target=work, args=(index,))
        for index in range(2)
        for work in (template, schema, calculation, document)
    ]
    for thread in hostiles:
        thread.start()
    live = 0
    with httpx.Client(base_url=world.server.url, timeout=60) as probe:
        assert probe.get("/health/live").status_code == 200
        stream = world.openai(bystander).chat.completions.create(
            model=SMOLLM2,
            messages=HI,
            max_tokens=16,
            stream=True,
        )
        streamed = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
        while any(thread.is_alive() for thread in hostiles):
            assert probe.get("/health/live").status_code == 200
            live += 1
    for thread in hostiles:
        thread.join()
    assert "".join(streamed), "the bystander's chat streamed its answer"
    assert {key: value for key, value in outcomes.items() if key.startswith("template")} == {
        "template 0": 422, "template 1": 422}  # fmt: skip
    for index in range(2):
        message, param = outcomes[f"schema {index}"]
        assert "minLength" in message and param == "response_format"
        assert outcomes[f"calculator {index}"] and all(outcomes[f"calculator {index}"])
        assert outcomes[f"document {index}"] == 422
    world.still_serving()
