"""Bad input for every /v1 endpoint, over real HTTP.

Each bad request must get the exact status and an OpenAI error object
(``message``, ``type``, ``param``, ``code``) whose ``param`` names the offending
field, and the server must keep serving afterwards (checked after every test).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from _pytest.mark import ParameterSet

from tests.conftest import GEMMA3, SMOLLM2
from tests.support.server import HTTP_TIMEOUT, Server

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
POSTS = {"chat": CHAT, "completions": COMPLETIONS, "embeddings": EMBEDDINGS}
HI = [{"role": "user", "content": "hi"}]
VALID: dict[str, dict[str, Any]] = {
    CHAT: {"model": SMOLLM2, "messages": HI, "max_tokens": 1},
    COMPLETIONS: {"model": SMOLLM2, "prompt": "hi", "max_tokens": 1},
    EMBEDDINGS: {"model": SMOLLM2, "input": "hi"},
}
MAX_BODY = 1024 * 1024  # the session server's max_body_bytes
LONG_TEXT = "hello " * 6000  # about 6000 tokens; the context is 4096
JSON = {"content-type": "application/json"}
DROP: Any = object()  # a field value meaning "leave the field out"


@pytest.fixture(autouse=True)
def still_serving(server: Server, http: httpx.Client) -> Iterator[None]:
    yield
    assert server.alive(), server.log.read_text()[-4000:]
    response = http.get("/v1/models")
    assert response.status_code == 200, response.text
    assert {m["id"] for m in response.json()["data"]} >= {SMOLLM2, GEMMA3}


def expect_error(
    response: httpx.Response,
    status: int,
    param: str | None,
    code: str | None,
    message: str | None = None,
) -> dict[str, Any]:
    """Assert an OpenAI error object with exactly this status, param and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert "'None'" not in error["message"], error
    assert error["type"] == "invalid_request_error", error
    assert error["param"] == param, error
    assert error["code"] == code, error
    if message is not None:
        assert message in error["message"], error
    return error


def request(path: str, **changes: Any) -> dict[str, Any]:
    """A valid body for ``path`` with some fields changed (``DROP`` removes one)."""
    body = {**VALID[path], **changes}
    return {k: v for k, v in body.items() if v is not DROP}


def case(
    id: str,
    path: str,
    *,
    status: int = 400,
    param: str | None,
    code: str | None = "invalid_value",
    message: str | None = None,
    **changes: Any,
) -> ParameterSet:
    return pytest.param(path, request(path, **changes), status, param, code, message, id=id)


# -- bodies that are not a JSON object ---------------------------------------

PARSE = "could not parse the JSON body"
NOT_OBJECT = "must be a JSON object"
RAW_BODIES = {
    "truncated-json": (b'{"model":', PARSE),
    "json-array": (b"[]", NOT_OBJECT),
    "json-string": (b'"x"', NOT_OBJECT),
    "json-number": (b"3", NOT_OBJECT),
    "json-null": (b"null", NOT_OBJECT),
    "invalid-utf8": (b'{"model": "\xff\xfe", "messages": []}', "could not parse the"),
    "empty-body": (b"", "body"),
}


@pytest.mark.parametrize("path", POSTS.values(), ids=POSTS.keys())
@pytest.mark.parametrize(("raw", "message"), RAW_BODIES.values(), ids=RAW_BODIES.keys())
def test_body_not_a_json_object(http: httpx.Client, path: str, raw: bytes, message: str) -> None:
    expect_error(http.post(path, content=raw, headers=JSON), 400, None, "invalid_value", message)


# The text each endpoint tokenizes, holding a lone surrogate: json.dumps writes
# it as the escape \udcff, valid JSON that decodes to no Unicode text.
LONE_SURROGATE: dict[str, dict[str, Any]] = {
    CHAT: {"messages": [{"role": "user", "content": "a\udcffb"}]},
    COMPLETIONS: {"prompt": "a\udcffb"},
    EMBEDDINGS: {"input": ["\udcff"]},
}


@pytest.mark.parametrize("path", POSTS.values(), ids=POSTS.keys())
def test_a_lone_surrogate_is_refused(http: httpx.Client, path: str) -> None:
    # It reached llama.cpp's tokenizer, whose UTF-8 encoding raised: a 500.
    raw = json.dumps(request(path, **LONE_SURROGATE[path])).encode()
    response = http.post(path, content=raw, headers=JSON)
    expect_error(response, 400, None, "invalid_value", "lone UTF-16 surrogate")


def test_a_surrogate_pair_is_text(http: httpx.Client) -> None:
    raw = json.dumps(request(CHAT, messages=[{"role": "user", "content": "\U0001f600"}]))
    assert "\\ud83d\\ude00" in raw  # one character, escaped as a pair
    assert http.post(CHAT, content=raw, headers=JSON).status_code == 200


# -- fields of the wrong type, missing, unknown, out of range -----------------


def _shared_cases() -> list[ParameterSet]:
    """Cases that apply alike to every POST endpoint, or to both generating ones."""
    cases: list[ParameterSet] = []
    required = {CHAT: "messages", COMPLETIONS: "prompt", EMBEDDINGS: "input"}
    for name, path in POSTS.items():
        cases += [
            case(f"{name}-model-number", path, param="model", model=3),
            case(f"{name}-model-empty", path, param="model", model=""),
            case(
                f"{name}-missing-model",
                path,
                param="model",
                message="Missing required parameter: 'model'.",
                model=DROP,
            ),
            case(
                f"{name}-missing-{required[path]}",
                path,
                param=required[path],
                message=f"Missing required parameter: '{required[path]}'.",
                **{required[path]: DROP},
            ),
            case(
                f"{name}-unknown-field",
                path,
                param="frobnicate",
                message="Unrecognized request argument supplied: frobnicate",
                frobnicate=1,
            ),
            case(
                f"{name}-unknown-model",
                path,
                status=404,
                param=None,
                code="model_not_found",
                message="nope:1b",
                model="nope:1b",
            ),
            case(f"{name}-user-number", path, param="user", user=7),
        ]
    sampling: list[tuple[str, str, Any]] = [
        ("max_tokens-string", "max_tokens", "10"),
        ("max_tokens-negative", "max_tokens", -1),
        ("max_tokens-zero", "max_tokens", 0),
        ("max_tokens-huge", "max_tokens", 10**9),
        ("temperature-string", "temperature", "hot"),
        ("temperature-above-2", "temperature", 2.5),
        ("temperature-negative", "temperature", -0.5),
        ("top_p-above-1", "top_p", 1.5),
        ("top_p-negative", "top_p", -0.1),
        ("stream-string", "stream", "yes"),
        ("stop-number", "stop", 3),
        ("n-2", "n", 2),
        ("seed-negative", "seed", -1),
    ]
    for name, path in (("chat", CHAT), ("completions", COMPLETIONS)):
        cases += [case(f"{name}-{id}", path, param=f, **{f: v}) for id, f, v in sampling]
        cases += [
            case(f"{name}-stop-5-strings", path, param="stop", message="at most 4",
                 stop=["a", "b", "c", "d", "e"]),
            case(f"{name}-stream-max_tokens-huge", path, param="max_tokens", stream=True,
                 max_tokens=10**9),
            case(f"{name}-stream-unknown-model", path, status=404, param=None,
                 code="model_not_found", stream=True, model="nope:1b"),
            case(f"{name}-stream_options-unknown-field", path,
                 param="stream_options.frobnicate", stream=True,
                 stream_options={"frobnicate": True}),
        ]  # fmt: skip
    return cases


def _message(**fields: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": "hi", **fields}]


FIELD_CASES = [
    *_shared_cases(),
    # chat
    case("chat-messages-string", CHAT, param="messages", messages="hi"),
    case("chat-messages-empty", CHAT, param="messages", messages=[]),
    case("chat-message-not-object", CHAT, param="messages[0]", messages=["hi"]),
    case("chat-role-unknown", CHAT, param="messages[0].role", messages=_message(role="wizard")),
    case("chat-role-missing", CHAT, param="messages[0].role", messages=[{"content": "hi"}]),
    case("chat-message-unknown-field", CHAT, param="messages[0].frobnicate",
         messages=_message(frobnicate=1)),
    case("chat-content-number", CHAT, param="messages[0].content", messages=_message(content=3)),
    case("chat-content-image_url", CHAT, param="messages[0].content", message="text only",
         messages=_message(content=[
             {"type": "text", "text": "what is this?"},
             {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
         ])),
    case("chat-max_completion_tokens-zero", CHAT, param="max_completion_tokens",
         max_completion_tokens=0),
    case("chat-max_completion_tokens-huge", CHAT, param="max_completion_tokens",
         max_completion_tokens=10**9),
    case("chat-response_format-json_schema-without-schema", CHAT,
         param="response_format.json_schema", response_format={"type": "json_schema"}),
    case("chat-response_format-type-unknown", CHAT, param="response_format.type",
         response_format={"type": "xml"}),
    # completions
    case("completions-prompt-number", COMPLETIONS, param="prompt", prompt=3),
    case("completions-prompt-empty-list", COMPLETIONS, param="prompt", prompt=[]),
    case("completions-prompt-list-of-numbers", COMPLETIONS, param="prompt[0]", prompt=[3]),
    case("completions-echo-string", COMPLETIONS, param="echo", echo="yes"),
    # embeddings
    case("embeddings-input-number", EMBEDDINGS, param="input", input=3),
    case("embeddings-input-empty-string", EMBEDDINGS, param="input", input=""),
    case("embeddings-input-empty-list", EMBEDDINGS, param="input", input=[]),
    case("embeddings-input-empty-item", EMBEDDINGS, param="input[1]", input=["ok", ""]),
    case("embeddings-input-list-of-numbers", EMBEDDINGS, param="input[0]", input=[3]),
    case("embeddings-input-too-many", EMBEDDINGS, param="input", message="at most 2048",
         input=["x"] * 2049),
    case("embeddings-encoding_format-unknown", EMBEDDINGS, param="encoding_format",
         encoding_format="hex"),
    case("embeddings-dimensions-zero", EMBEDDINGS, param="dimensions", dimensions=0),
    case("embeddings-dimensions-string", EMBEDDINGS, param="dimensions", dimensions="8"),
    case("embeddings-dimensions-unsupported", EMBEDDINGS, param="dimensions", dimensions=7),
    # longer than the 4096-token context
    case("chat-context-exceeded", CHAT, param="messages", code="context_length_exceeded",
         messages=_message(content=LONG_TEXT)),
    case("chat-stream-context-exceeded", CHAT, param="messages",
         code="context_length_exceeded", stream=True, messages=_message(content=LONG_TEXT)),
    case("completions-context-exceeded", COMPLETIONS, param="prompt",
         code="context_length_exceeded", prompt=LONG_TEXT),
    case("embeddings-context-exceeded", EMBEDDINGS, param="input",
         code="context_length_exceeded", input=LONG_TEXT),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "status", "param", "code", "message"), FIELD_CASES)
def test_bad_field(
    http: httpx.Client,
    path: str,
    body: dict[str, Any],
    status: int,
    param: str | None,
    code: str | None,
    message: str | None,
) -> None:
    expect_error(http.post(path, json=body), status, param, code, message)


# -- bodies over the 1 MiB limit -------------------------------------------------


def _oversized(path: str) -> bytes:
    filler = "x" * (MAX_BODY + 1024)
    field = {CHAT: "messages", COMPLETIONS: "prompt", EMBEDDINGS: "input"}[path]
    value: Any = _message(content=filler) if path == CHAT else filler
    return httpx.Request("POST", "/", json=request(path, **{field: value})).read()


@pytest.mark.parametrize("path", POSTS.values(), ids=POSTS.keys())
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_too_large(http: httpx.Client, path: str, chunked: bool) -> None:
    data = _oversized(path)
    assert len(data) > MAX_BODY

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    built = http.build_request("POST", path, content=pieces() if chunked else data, headers=JSON)
    assert ("content-length" in built.headers) is not chunked
    assert (built.headers.get("transfer-encoding") == "chunked") is chunked
    response = http.send(built)
    expect_error(response, 413, None, "request_too_large", str(MAX_BODY))


# -- GET endpoints, unknown routes and wrong methods ----------------------------

ROUTE_CASES = [
    pytest.param("GET", "/v1/models/nope:1b", 404, "model_not_found", id="model-unknown"),
    pytest.param("GET", "/v1/models/NOT A NAME!", 404, "model_not_found", id="model-invalid-name"),
    pytest.param("GET", "/v1/models/..%2F..%2Fetc%2Fpasswd", 404, "model_not_found",
                 id="model-path-traversal"),
    pytest.param("GET", "/v1/models/", 404, "model_not_found", id="model-empty-id"),
    pytest.param("GET", "/v1/nope", 404, None, id="unknown-route"),
    pytest.param("GET", CHAT, 405, None, id="chat-get"),
    pytest.param("GET", COMPLETIONS, 405, None, id="completions-get"),
    pytest.param("GET", EMBEDDINGS, 405, None, id="embeddings-get"),
    pytest.param("POST", "/v1/models", 405, None, id="models-post"),
    pytest.param("DELETE", f"/v1/models/{SMOLLM2}", 405, None, id="model-delete"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "status", "code"), ROUTE_CASES)
def test_bad_route(
    http: httpx.Client, method: str, path: str, status: int, code: str | None
) -> None:
    expect_error(http.request(method, path), status, None, code)


# -- the same through the official client ----------------------------------------

Call = Callable[[openai.OpenAI], object]


def _chat(**kwargs: Any) -> Call:
    return lambda c: c.chat.completions.create(**{"model": SMOLLM2, "messages": HI, **kwargs})


def _completion(**kwargs: Any) -> Call:
    return lambda c: c.completions.create(**{"model": SMOLLM2, "prompt": "hi", **kwargs})


def _embedding(**kwargs: Any) -> Call:
    return lambda c: c.embeddings.create(**{"model": SMOLLM2, "input": "hi", **kwargs})


BAD = openai.BadRequestError
NOT_FOUND = openai.NotFoundError
CLIENT_CASES = [
    pytest.param(lambda c: c.models.retrieve("nope:1b"), NOT_FOUND, None, "model_not_found",
                 id="models-retrieve-unknown"),
    pytest.param(_chat(model="nope:1b"), NOT_FOUND, None, "model_not_found",
                 id="chat-unknown-model"),
    pytest.param(_chat(model="nope:1b", stream=True), NOT_FOUND, None, "model_not_found",
                 id="chat-stream-unknown-model"),
    pytest.param(_chat(extra_body={"frobnicate": 1}), BAD, "frobnicate", "invalid_value",
                 id="chat-unknown-field"),
    pytest.param(_chat(messages=[]), BAD, "messages", "invalid_value", id="chat-messages-empty"),
    pytest.param(_chat(messages=[{"role": "wizard", "content": "hi"}]), BAD, "messages[0].role",
                 "invalid_value", id="chat-role-unknown"),
    pytest.param(_chat(n=2), BAD, "n", "invalid_value", id="chat-n-2"),
    pytest.param(_chat(temperature=3), BAD, "temperature", "invalid_value", id="chat-temperature"),
    pytest.param(_chat(top_p=2), BAD, "top_p", "invalid_value", id="chat-top_p"),
    pytest.param(_chat(max_tokens=0), BAD, "max_tokens", "invalid_value", id="chat-max_tokens-0"),
    pytest.param(_chat(max_tokens=10**9, stream=True), BAD, "max_tokens", "invalid_value",
                 id="chat-stream-max_tokens-huge"),
    pytest.param(_chat(stop=list("abcde")), BAD, "stop", "invalid_value", id="chat-stop-5"),
    pytest.param(_chat(messages=[{"role": "user", "content": [
                     {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]),
                 BAD, "messages[0].content", "invalid_value", id="chat-image_url"),
    pytest.param(_chat(response_format={"type": "json_schema"}), BAD,
                 "response_format.json_schema", "invalid_value", id="chat-json_schema-missing"),
    pytest.param(_chat(messages=[{"role": "user", "content": LONG_TEXT}]), BAD, "messages",
                 "context_length_exceeded", id="chat-context-exceeded"),
    pytest.param(_completion(model="nope:1b"), NOT_FOUND, None, "model_not_found",
                 id="completions-unknown-model"),
    pytest.param(_completion(max_tokens=-1), BAD, "max_tokens", "invalid_value",
                 id="completions-max_tokens-negative"),
    pytest.param(_completion(prompt=LONG_TEXT), BAD, "prompt", "context_length_exceeded",
                 id="completions-context-exceeded"),
    pytest.param(_embedding(model="nope:1b"), NOT_FOUND, None, "model_not_found",
                 id="embeddings-unknown-model"),
    pytest.param(_embedding(input=""), BAD, "input", "invalid_value", id="embeddings-input-empty"),
    pytest.param(_embedding(input=[]), BAD, "input", "invalid_value",
                 id="embeddings-input-empty-list"),
    pytest.param(_embedding(dimensions=7), BAD, "dimensions", "invalid_value",
                 id="embeddings-dimensions"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "param", "code"), CLIENT_CASES)
def test_official_client_raises(
    client: openai.OpenAI,
    call: Call,
    error: type[openai.APIStatusError],
    param: str | None,
    code: str,
) -> None:
    with pytest.raises(error) as raised:
        call(client)
    assert type(raised.value) is error
    assert raised.value.type == "invalid_request_error"
    assert raised.value.param == param
    assert raised.value.code == code
    assert isinstance(raised.value.body, dict)
    assert set(raised.value.body) == {"message", "type", "param", "code"}


def test_still_generates_after_bad_input(client: openai.OpenAI) -> None:
    """After all of the above, both models still answer a well-formed request."""
    for model in (SMOLLM2, GEMMA3):
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert reply.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain"])
def test_json_is_parsed_only_when_declared(server: Server, content_type: str) -> None:
    body = json.dumps({"model": SMOLLM2, "messages": [{"role": "user", "content": "hi"}]})
    response = httpx.post(
        f"{server.v1}/chat/completions",
        content=body,
        headers={"content-type": content_type},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        f"Content-Type must be application/json, not '{content_type}'."
    )
