"""Bad input for every Ollama endpoint, over real HTTP.

Each bad request must get the exact status and Ollama's error object,
``{"error": "<message>"}`` and nothing else, whose message says what was wrong;
the server must keep serving afterwards (checked after every test).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import ollama
import pytest
from _pytest.mark import ParameterSet

from tests.conftest import GEMMA3, SMOLLM2
from tests.support.server import Server

HI = [{"role": "user", "content": "hi"}]
ONE = {"num_predict": 1}
# Per endpoint: method, path, and a valid body that each case breaks in one way.
VALID: dict[str, tuple[str, str, dict[str, Any]]] = {
    "generate": ("POST", "/api/generate", {"model": SMOLLM2, "prompt": "hi", "stream": False,
                                           "options": ONE}),
    "chat": ("POST", "/api/chat", {"model": SMOLLM2, "messages": HI, "stream": False,
                                   "options": ONE}),
    "embed": ("POST", "/api/embed", {"model": SMOLLM2, "input": "hi"}),
    "embeddings": ("POST", "/api/embeddings", {"model": SMOLLM2, "prompt": "hi"}),
    "show": ("POST", "/api/show", {"model": SMOLLM2}),
    "create": ("POST", "/api/create", {"model": "errors-probe", "from": SMOLLM2,
                                       "stream": False}),
    "copy": ("POST", "/api/copy", {"source": SMOLLM2, "destination": "errors-probe"}),
    "delete": ("DELETE", "/api/delete", {"model": "errors-probe"}),
    "pull": ("POST", "/api/pull", {"model": SMOLLM2, "stream": False}),
    "push": ("POST", "/api/push", {"model": SMOLLM2, "stream": False}),
}  # fmt: skip
NAMED = [name for name in VALID if name != "copy"]  # the endpoints with a `model` field
INFERENCE = ["generate", "chat", "embed", "embeddings"]
MAX_BODY = 1024 * 1024  # the session server's max_body_bytes
LONG_TEXT = "hello " * 9000  # about 9000 tokens; the context is 4096
NOT_FOUND = "model 'nope:1b' not found"
JSON = {"content-type": "application/json"}
DROP: Any = object()  # a field value meaning "leave the field out"


@pytest.fixture(scope="module")
def ol(server: Server) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.url, timeout=120) as client:
        yield client


@pytest.fixture(autouse=True)
def still_serving(server: Server, http: httpx.Client) -> Iterator[None]:
    yield
    assert server.alive(), server.log.read_text()[-4000:]
    response = http.get("/api/tags")
    assert response.status_code == 200, response.text
    assert {m["name"] for m in response.json()["models"]} >= {SMOLLM2, GEMMA3}


def expect_error(response: httpx.Response, status: int, message: str) -> str:
    """Assert Ollama's error object, with this status and ``message`` in its text."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, str) and error.strip(), body
    assert message in error, body
    return error


def case(endpoint: str, what: str, message: str, status: int = 400, **changes: Any) -> ParameterSet:
    """``endpoint``'s valid body with some fields changed (``DROP`` removes one)."""
    method, path, valid = VALID[endpoint]
    body = {k: v for k, v in {**valid, **changes}.items() if v is not DROP}
    return pytest.param(method, path, body, status, message, id=f"{endpoint}-{what}")


# -- bodies that are not a JSON object ---------------------------------------------

RAW_BODIES = {
    "truncated-json": (b'{"model":', "could not parse the JSON body"),
    "json-array": (b"[]", "must be a JSON object"),
    "json-string": (b'"x"', "must be a JSON object"),
    "json-number": (b"3", "must be a JSON object"),
    "json-null": (b"null", "must be a JSON object"),
    "invalid-utf8": (b'{"model": "\xff\xfe"}', "could not parse the"),
    "empty-body": (b"", "body"),
}


@pytest.mark.parametrize("endpoint", VALID)
@pytest.mark.parametrize(("raw", "message"), RAW_BODIES.values(), ids=RAW_BODIES.keys())
def test_body_not_a_json_object(
    http: httpx.Client, endpoint: str, raw: bytes, message: str
) -> None:
    method, path, _ = VALID[endpoint]
    expect_error(http.request(method, path, content=raw, headers=JSON), 400, message)


# -- fields of the wrong type, missing, unknown, out of range -------------------------


def _shared_cases() -> list[ParameterSet]:
    """Cases that apply alike to several endpoints."""
    cases = [case(name, "unknown-field", "frobnicate", frobnicate=1) for name in VALID]
    for name in NAMED:
        cases += [
            case(name, "model-number", "model", model=3),
            case(name, "missing-model", "model", model=DROP),  # Ollama: "model is required"
            case(name, "model-empty", "model", model=""),
        ]
    for name in ("generate", "chat", "embed", "embeddings", "show", "delete"):
        cases.append(case(name, "unknown-model", NOT_FOUND, 404, model="nope:1b"))
    for name in ("generate", "chat", "create", "pull", "push"):
        cases.append(case(name, "stream-string", "stream", stream="yes"))
    for name in INFERENCE:
        cases += [
            case(name, "temperature-string", "options.temperature", options={"temperature": "hot"}),
            case(name, "options-unknown", "options.frobnicate", options={"frobnicate": 1}),
            case(name, "mirostat-2", "mirostat", options={"mirostat": 2}),
            case(name, "keep_alive-list", "keep_alive", keep_alive=[1]),
            case(name, "keep_alive-words", '"5 minutes"', keep_alive="5 minutes"),
        ]
    for name in ("generate", "chat"):
        cases += [
            case(name, "stream-unknown-model", NOT_FOUND, 404, stream=True, model="nope:1b"),
            case(name, "num_ctx-too-small", "options.num_ctx", options={"num_ctx": 4}),
            case(name, "num_predict-string", "options.num_predict", options={"num_predict": "9"}),
            case(name, "stop-string-list", "options.stop", options={"stop": [1]}),
            case(name, "think", "does not support thinking", think=True),
            case(name, "format-xml", "format", format="xml"),
        ]
    return cases


LONG = [{"role": "user", "content": LONG_TEXT}]
FIELD_CASES = [
    *_shared_cases(),
    # generate
    case("generate", "prompt-number", "prompt", prompt=3),
    case("generate", "images-string", "images", images="aGk="),
    case("generate", "context", "context", context=[1, 2, 3]),
    case("generate", "load-keep_alive-words", '"5 minutes"', prompt="", keep_alive="5 minutes"),
    case("generate", "prompt-over-num_ctx", "context is 32 tokens",
         prompt="hello " * 100, options={"num_ctx": 32}),
    case("generate", "context-exceeded", "4096", prompt=LONG_TEXT),
    case("generate", "stream-context-exceeded", "4096", prompt=LONG_TEXT, stream=True),
    # chat
    case("chat", "messages-string", "messages", messages="hi"),
    case("chat", "message-not-object", "messages[0]", messages=["hi"]),
    case("chat", "role-unknown", "messages[0].role",
         messages=[{"role": "wizard", "content": "hi"}]),
    case("chat", "content-number", "messages[0].content",
         messages=[{"role": "user", "content": 3}]),
    case("chat", "tool-parameters-not-a-schema", "invalid JSON schema for tool 'add'",
         tools=[{"type": "function", "function": {"name": "add", "parameters": {"type": 3}}}]),
    case("chat", "tool-without-name", "needs a name", tools=[{"type": "function",
         "function": {"parameters": {"type": "object"}}}]),
    case("chat", "context-exceeded", "4096", messages=LONG),
    case("chat", "stream-context-exceeded", "4096", messages=LONG, stream=True),
    # embed and embeddings
    case("embed", "missing-input", "input", input=DROP),
    case("embed", "input-number", "input", input=3),
    case("embed", "input-empty-list", "input", input=[]),
    case("embed", "input-list-of-numbers", "input", input=[3]),
    case("embed", "truncate-string", "truncate", truncate="no"),
    case("embed", "dimensions-zero", "dimensions", dimensions=0),
    case("embed", "context-exceeded", "4096", input=LONG_TEXT, truncate=False),
    case("embeddings", "prompt-number", "prompt", prompt=3),
    case("embeddings", "context-exceeded", "4096", prompt=LONG_TEXT),
    # create, copy
    case("create", "from-unknown", NOT_FOUND, 404, **{"from": "nope:1b"}),
    case("create", "nothing-to-create-from", "from", **{"from": DROP}),
    case("create", "name-invalid", "invalid model name", model="Not A Name!"),
    case("create", "from-not-a-gguf", "GGUF", 400, **{"from": sys.executable}),
    case("create", "files-blob-missing", "upload it first", **{"from": DROP},
         files={"model.gguf": "sha256:" + "0" * 64}),
    case("create", "files-digest-invalid", "digest", **{"from": DROP},
         files={"model.gguf": "sha256:xyz"}),
    case("create", "adapters", "adapters", adapters={"lora.gguf": "sha256:" + "0" * 64}),
    case("create", "quantize", "quantize", quantize="q4_0"),
    case("create", "parameter-type", "temperature", parameters={"temperature": "hot"}),
    case("create", "parameter-unknown", "frobnicate", parameters={"frobnicate": 1}),
    case("create", "template-broken", "template", template="{% for %}"),
    case("create", "modelfile-unknown-command", "FROBNICATE", **{"from": DROP},
         modelfile=f"FROM {SMOLLM2}\nFROBNICATE 1"),
    case("create", "modelfile-without-from", "FROM", **{"from": DROP},
         modelfile="SYSTEM hello"),
    case("create", "modelfile-adapter", "ADAPTER", **{"from": DROP},
         modelfile=f"FROM {SMOLLM2}\nADAPTER ./lora.gguf"),
    case("create", "modelfile-quotes-broken", "not one quoted string", **{"from": DROP},
         modelfile=f'FROM {SMOLLM2}\nSYSTEM "a" "b"'),
    case("copy", "source-number", "source", source=3),
    case("copy", "missing-destination", "destination", destination=DROP),
    case("copy", "unknown-source", NOT_FOUND, 404, source="nope:1b"),
    case("copy", "destination-invalid", "invalid model name", destination="Not A Name!"),
    case("pull", "insecure-string", "insecure", insecure="yes"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), FIELD_CASES)
def test_bad_field(
    http: httpx.Client, method: str, path: str, body: dict[str, Any], status: int, message: str
) -> None:
    expect_error(http.request(method, path, json=body), status, message)


# Per endpoint, the field it tokenizes, holding a lone surrogate: json.dumps
# writes it as the escape \udcff, valid JSON that decodes to no Unicode text.
LONE_SURROGATE: dict[str, dict[str, Any]] = {
    "generate": {"prompt": "a\udcffb"},
    "chat": {"messages": [{"role": "user", "content": "a\udcffb"}]},
    "embed": {"input": ["\udcff"]},
    "embeddings": {"prompt": "\udcff"},
    "create": {"system": "\udcff"},
}


@pytest.mark.parametrize("endpoint", LONE_SURROGATE)
def test_a_lone_surrogate_is_refused(http: httpx.Client, endpoint: str) -> None:
    # It reached llama.cpp's tokenizer, whose UTF-8 encoding raised: a 500.
    method, path, valid = VALID[endpoint]
    raw = json.dumps({**valid, **LONE_SURROGATE[endpoint]}).encode()
    response = http.request(method, path, content=raw, headers=JSON)
    expect_error(response, 400, "lone UTF-16 surrogate")


# -- bodies over the 1 MiB limit --------------------------------------------------------


@pytest.mark.parametrize("endpoint", VALID)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_too_large(http: httpx.Client, endpoint: str, chunked: bool) -> None:
    method, path, valid = VALID[endpoint]
    data = json.dumps({**valid, "padding": "x" * (MAX_BODY + 1024)}).encode()

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    built = http.build_request(method, path, content=pieces() if chunked else data, headers=JSON)
    assert ("content-length" in built.headers) is not chunked
    expect_error(http.send(built), 413, str(MAX_BODY))


def test_blobs_have_no_body_limit(http: httpx.Client) -> None:
    data = b"\0" * (MAX_BODY * 2)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert http.post(f"/api/blobs/{digest}", content=data).status_code in (200, 201)
    assert http.head(f"/api/blobs/{digest}").status_code == 200


# -- blobs, unknown routes and wrong methods ----------------------------------------------

ROUTE_CASES = [
    pytest.param("POST", "/api/blobs/sha256:xyz", 400, "digest", id="blob-upload-digest-invalid"),
    pytest.param("POST", "/api/blobs/md5:" + "0" * 32, 400, "digest", id="blob-upload-md5"),
    pytest.param("GET", "/api/generate", 405, "", id="generate-get"),
    pytest.param("GET", "/api/chat", 405, "", id="chat-get"),
    pytest.param("POST", "/api/tags", 405, "", id="tags-post"),
    pytest.param("POST", "/api/delete", 405, "", id="delete-post"),
    pytest.param("GET", "/api/nope", 404, "", id="unknown-route"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "status", "message"), ROUTE_CASES)
def test_bad_route(http: httpx.Client, method: str, path: str, status: int, message: str) -> None:
    expect_error(http.request(method, path, content=b"data"), status, message)


@pytest.mark.parametrize(
    ("digest", "status"), [("sha256:xyz", 400), ("sha256:" + "0" * 64, 404)], ids=str
)
def test_head_blob(http: httpx.Client, digest: str, status: int) -> None:
    assert http.head(f"/api/blobs/{digest}").status_code == status


# -- the same through the official client -----------------------------------------------

Call = Callable[[ollama.Client], object]
BAD_PARAMETERS = {"type": "object", "properties": {"a": {"type": "nonsense"}}}
BAD_TOOL = {"type": "function", "function": {"name": "add", "parameters": BAD_PARAMETERS}}
CLIENT_CASES = [
    pytest.param(lambda c: c.generate(model="nope:1b", prompt="hi"), 404, NOT_FOUND,
                 id="generate-unknown-model"),
    pytest.param(lambda c: list(c.generate(model="nope:1b", prompt="hi", stream=True)), 404,
                 NOT_FOUND, id="generate-stream-unknown-model"),
    pytest.param(lambda c: list(c.chat(model="nope:1b", messages=HI, stream=True)), 404,
                 NOT_FOUND, id="chat-stream-unknown-model"),
    pytest.param(lambda c: c.embed(model="nope:1b", input="hi"), 404, NOT_FOUND,
                 id="embed-unknown-model"),
    pytest.param(lambda c: c.embeddings(model="nope:1b", prompt="hi"), 404, NOT_FOUND,
                 id="embeddings-unknown-model"),
    pytest.param(lambda c: c.show("nope:1b"), 404, NOT_FOUND, id="show-unknown-model"),
    pytest.param(lambda c: c.copy("nope:1b", "x"), 404, NOT_FOUND, id="copy-unknown-model"),
    pytest.param(lambda c: c.delete("nope:1b"), 404, NOT_FOUND, id="delete-unknown-model"),
    pytest.param(lambda c: c.create(model="x", from_="nope:1b"), 404, NOT_FOUND,
                 id="create-unknown-model"),
    pytest.param(lambda c: c.chat(model=SMOLLM2, messages=HI, tools=[BAD_TOOL]), 400,
                 "invalid JSON schema for tool 'add'", id="chat-tool-not-a-schema"),
    pytest.param(lambda c: c.chat(model=SMOLLM2, messages=HI, think=True), 400,
                 "does not support thinking", id="chat-think"),
    pytest.param(lambda c: c.generate(model=SMOLLM2, prompt="hi", keep_alive="5 minutes"), 400,
                 "5 minutes", id="generate-keep_alive-words"),
    pytest.param(lambda c: c.generate(model=SMOLLM2, prompt="hi", options={"mirostat": 2}), 400,
                 "mirostat", id="generate-mirostat-2"),
    pytest.param(lambda c: c.generate(model=SMOLLM2, prompt=LONG_TEXT), 400, "4096",
                 id="generate-context-exceeded"),
    pytest.param(lambda c: c.create(model="x", from_=SMOLLM2, quantize="q4_0"), 400, "quantize",
                 id="create-quantize"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "status", "message"), CLIENT_CASES)
def test_official_client_raises(ol: ollama.Client, call: Call, status: int, message: str) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        call(ol)
    assert raised.value.status_code == status
    assert message in raised.value.error


def test_a_failed_request_does_not_pin_the_model(http: httpx.Client) -> None:
    """A model loaded by a request that then fails gets the default 5-minute keep-alive.

    (It must not stay loaded forever: /api/ps would show it never expiring.)
    """
    assert http.post("/api/copy", json={"source": SMOLLM2, "destination": "errors-pin"}).is_success
    try:
        body = {"model": "errors-pin", "prompt": LONG_TEXT, "stream": False}
        expect_error(http.post("/api/generate", json=body), 400, "4096")
        loaded = {m["model"]: m for m in http.get("/api/ps").json()["models"]}
        if "errors-pin:latest" in loaded:
            expires = datetime.fromisoformat(loaded["errors-pin:latest"]["expires_at"])
            assert expires <= datetime.now(UTC) + timedelta(minutes=5, seconds=30), loaded
    finally:
        http.post("/api/generate", json={"model": "errors-pin", "keep_alive": 0})
        http.request("DELETE", "/api/delete", json={"model": "errors-pin"})


def test_still_generates_after_bad_input(ol: ollama.Client) -> None:
    """After all of the above, both models still answer a well-formed request."""
    for model in (SMOLLM2, GEMMA3):
        reply = ol.chat(model=model, messages=HI, options={"num_predict": 2})
        assert reply.done and reply.done_reason in ("stop", "length")
