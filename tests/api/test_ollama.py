"""The Ollama API, driven by the official ``ollama`` client: sync, async and streaming.

What the client does not expose (``/``, ``/api/version``, ``HEAD /api/blobs``,
Modelfile strings, the NDJSON wire format) is checked with raw httpx.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import jsonschema
import ollama
import openai
import pytest

from blackroad.models.bundled import bundled_models
from tests.conftest import GEMMA3, SMOLLM2
from tests.support.same_text import read_ollama_prompt
from tests.support.server import HTTP_TIMEOUT, Server, running_server

STORY = "Tell me a long story about a dragon and a knight."
HELLO = [{"role": "user", "content": "Say hello."}]
CAPITAL = 'What is the capital of France? Reply as JSON like {"capital": "..."}.'
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}  # fmt: skip
GREEDY: dict[str, Any] = {"temperature": 0, "seed": 42}
TIMINGS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
           "eval_count", "eval_duration")  # fmt: skip
PIRATE = "You are a pirate named Blackbeard. Always talk like a pirate."
RAW_TEMPLATE = "{{ messages[-1]['content'] }}"  # Jinja: the last message, no chat markup
Reply = ollama.GenerateResponse | ollama.ChatResponse
Options = dict[str, Any]


@pytest.fixture
def ol(server: Server) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.url, timeout=300) as client:
        yield client


@pytest.fixture
def created(ol: ollama.Client) -> Iterator[list[str]]:
    """Names of models a test creates; deleted (and unloaded) afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        with contextlib.suppress(ollama.ResponseError):  # 404: the test deleted it itself
            ol.generate(model=name, keep_alive=0)
            ol.delete(name)


def refusal(call: Callable[[], object]) -> tuple[int, str]:
    """The status and ``error`` text of the ResponseError that ``call`` must raise."""
    with pytest.raises(ollama.ResponseError) as refused:
        call()
    return refused.value.status_code, refused.value.error


def text(reply: Reply) -> str:
    if isinstance(reply, ollama.ChatResponse):
        return reply.message.content or ""
    return reply.response or ""


def ask(
    ol: ollama.Client, endpoint: str, prompt: str, options: Options, stream: bool = False,
    fmt: Literal["json"] | None = None,
) -> list[Reply]:  # fmt: skip
    """smollm2 on /api/generate, or /api/chat with ``prompt`` as the user: [whole] or chunks."""
    turns = [{"role": "user", "content": prompt}]
    if endpoint == "chat" and stream:
        return list(ol.chat(model=SMOLLM2, messages=turns, options=options, stream=True))
    if endpoint == "chat":
        return [ol.chat(model=SMOLLM2, messages=turns, format=fmt, options=options)]
    if stream:
        return list(ol.generate(model=SMOLLM2, prompt=prompt, options=options, stream=True))
    return [ol.generate(model=SMOLLM2, prompt=prompt, format=fmt, options=options)]


def assert_final(reply: Reply, num_predict: int | None = None) -> None:
    """A final object: done, a reason, and every timing as a non-negative int (ns)."""
    assert reply.done is True
    assert reply.done_reason in ("stop", "length")
    for field in TIMINGS:
        value = getattr(reply, field)
        assert isinstance(value, int) and value >= 0, (field, value)
    assert (reply.prompt_eval_count or 0) > 0 and (reply.total_duration or 0) > 0
    assert (reply.total_duration or 0) >= (reply.eval_duration or 0)
    if reply.done_reason == "length" and num_predict is not None:
        assert reply.eval_count == num_predict


def expires_in(ol: ollama.Client, model: str) -> timedelta | None:
    """How long until ``model`` unloads, per /api/ps; None when it is not loaded."""
    for loaded in ol.ps().models:
        if loaded.model == model:
            assert loaded.expires_at is not None and loaded.details is not None
            return loaded.expires_at - datetime.now(UTC)
    return None


def assert_expires(ol: ollama.Client, model: str, minutes: int) -> None:
    left = expires_in(ol, model)
    assert left is not None, f"{model} is not listed by /api/ps"
    assert timedelta(minutes=minutes - 1) < left <= timedelta(minutes=minutes)


# -- liveness, version, tags, show ------------------------------------------------


def test_root_says_ollama_is_running(server: Server) -> None:
    got = httpx.get(server.url, timeout=HTTP_TIMEOUT)
    assert (got.status_code, got.text) == (200, "Ollama is running")
    head = httpx.head(server.url, timeout=HTTP_TIMEOUT)
    assert head.status_code == 200 and head.content == b""
    version = httpx.get(f"{server.url}/api/version", timeout=HTTP_TIMEOUT).json()
    assert all(part.isdigit() for part in version["version"].split("."))


def test_tags_lists_bundled_models(ol: ollama.Client) -> None:
    models = {m.model: m for m in ol.list().models}
    assert {SMOLLM2, GEMMA3} <= set(models)
    for name, family in ((SMOLLM2, "llama"), (GEMMA3, "gemma3")):
        entry = models[name]
        assert entry.details is not None and entry.details.family == family
        assert entry.details.format == "gguf" and entry.details.quantization_level
        assert (entry.size or 0) > 10_000_000 and entry.modified_at is not None
        assert entry.digest is not None and len(entry.digest) == 64


@pytest.mark.parametrize(("model", "arch"), [(SMOLLM2, "llama"), (GEMMA3, "gemma3")])
def test_show(ol: ollama.Client, server: Server, model: str, arch: str) -> None:
    shown = ol.show(model)
    assert shown.details is not None and shown.details.family == arch
    info = shown.modelinfo or {}
    assert info["general.architecture"] == arch
    assert info["general.parameter_count"] > 100_000_000
    assert info[f"{arch}.context_length"] >= 8192
    assert shown.template and "messages" in shown.template  # a Jinja chat template
    assert (shown.modelfile or "").startswith("FROM ")
    assert f'TEMPLATE """{shown.template}"""' in (shown.modelfile or "")
    assert shown.parameters is not None and "completion" in (shown.capabilities or [])
    if model == GEMMA3:
        assert 'stop            "<end_of_turn>"' in shown.parameters
    legacy = httpx.post(f"{server.url}/api/show", json={"name": model}, timeout=HTTP_TIMEOUT)
    assert legacy.status_code == 200 and legacy.json()["template"] == shown.template


# -- generate and chat ---------------------------------------------------------------


@pytest.mark.parametrize("model", [SMOLLM2, GEMMA3])
def test_generate_and_chat_final_objects(ol: ollama.Client, model: str) -> None:
    options = {"num_predict": 8, **GREEDY}
    read_ollama_prompt(ol, "generate", model=model, prompt=STORY, options=options)
    generated = ol.generate(model=model, prompt=STORY, options=options)
    chatted = ol.chat(model=model, messages=[{"role": "user", "content": STORY}], options=options)
    for reply in (generated, chatted):
        assert_final(reply, 8)
        assert (reply.model, reply.done_reason) == (model, "length")
    assert chatted.message.role == "assistant"
    assert text(chatted) == text(generated)  # generate wraps the prompt in the chat template


@pytest.mark.parametrize("endpoint", ["generate", "chat"])
def test_stream_concatenates_to_the_whole(ol: ollama.Client, endpoint: str) -> None:
    options = {"num_predict": 24, **GREEDY}
    ask(ol, endpoint, STORY, {**options, "num_predict": 1})  # as read_ollama_prompt does
    [whole], chunks = ask(ol, endpoint, STORY, options), ask(ol, endpoint, STORY, options, True)
    assert len(chunks) > 2 and [c.done for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(c.done_reason is None for c in chunks[:-1]) and text(chunks[-1]) == ""
    assert "".join(text(c) for c in chunks) == text(whole)
    assert_final(chunks[-1], 24)
    assert chunks[-1].eval_count == whole.eval_count == 24


def test_ndjson_wire_format(server: Server) -> None:
    body = {"model": SMOLLM2, "prompt": "hi", "options": {"num_predict": 4}}
    with httpx.stream("POST", f"{server.url}/api/generate", json=body, timeout=120) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in response.iter_lines() if line]
    whole = httpx.post(f"{server.url}/api/generate", json={**body, "stream": False}, timeout=120)
    for final in (lines[-1], whole.json()):
        assert final["done"] is True and final["done_reason"] == "length"
        assert all(type(final[field]) is int for field in TIMINGS), final
        assert datetime.fromisoformat(final["created_at"]).tzinfo is not None
    assert {line["model"] for line in lines} == {SMOLLM2}


@pytest.mark.anyio
async def test_async_client(server: Server) -> None:
    async with ollama.AsyncClient(host=server.url, timeout=300) as client:
        reply = await client.generate(model=SMOLLM2, prompt=STORY, options={"num_predict": 5})
        assert_final(reply, 5)
        stream = await client.chat(model=GEMMA3, messages=HELLO, stream=True,
                                   options={"num_predict": 6, **GREEDY})  # fmt: skip
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].done and "".join(text(c) for c in chunks).strip()
        assert len((await client.embed(model=SMOLLM2, input=["a", "b"])).embeddings) == 2
        assert SMOLLM2 in {m.model for m in (await client.list()).models}
        assert (await client.show(GEMMA3)).details is not None
        assert SMOLLM2 in {m.model for m in (await client.ps()).models}


@pytest.mark.parametrize("endpoint", ["generate", "chat"])
def test_format_json_parses(ol: ollama.Client, endpoint: str) -> None:
    [reply] = ask(ol, endpoint, CAPITAL, {"num_predict": 150, **GREEDY}, fmt="json")
    assert_final(reply)
    assert reply.done_reason == "stop" and (reply.eval_count or 0) < 150  # a natural end
    assert isinstance(json.loads(text(reply)), dict)


@pytest.mark.parametrize("model", [SMOLLM2, GEMMA3])
def test_format_schema_validates(ol: ollama.Client, model: str) -> None:
    reply = ol.generate(model=model, prompt="Describe a person as JSON.", format=PERSON,
                        options={"num_predict": 200, **GREEDY})  # fmt: skip
    assert reply.done_reason == "stop"
    jsonschema.validate(json.loads(text(reply)), PERSON)


def test_same_seed_same_text(ol: ollama.Client) -> None:
    def sample(**options: Any) -> str:
        return text(ask(ol, "generate", STORY, {"num_predict": 24, **options})[0])

    assert sample(temperature=0, seed=1) == sample(temperature=0, seed=1)
    first = sample(temperature=1.0, seed=1234)
    assert first == sample(temperature=1.0, seed=1234)
    assert first != sample(temperature=1.0, seed=99)


def test_stop_never_appears_in_output(ol: ollama.Client) -> None:
    options = {"num_predict": 40, **GREEDY}
    full = text(ol.generate(model=SMOLLM2, prompt=STORY, options=options))
    assert len(full) > 40
    stop = full[20:27]  # seven characters: spans more than one token
    expected = full[: full.index(stop)]
    reply = ol.generate(model=SMOLLM2, prompt=STORY, options={**options, "stop": [stop]})
    assert (text(reply), reply.done_reason) == (expected, "stop")
    streamed = ol.generate(model=SMOLLM2, prompt=STORY, options={**options, "stop": [stop]},
                           stream=True)  # fmt: skip
    assert "".join(text(c) for c in streamed) == expected


def test_system_changes_the_prompt(ol: ollama.Client) -> None:
    options = {"num_predict": 20, **GREEDY}
    plain = ol.generate(model=SMOLLM2, prompt="Who?", options=options)
    pirate = ol.generate(model=SMOLLM2, prompt="Who?", system=PIRATE, options=options)
    assert text(pirate) != text(plain)
    assert pirate.prompt_eval_count != plain.prompt_eval_count
    spelled_out = [{"role": "system", "content": PIRATE}, {"role": "user", "content": "Who?"}]
    as_chat = ol.chat(model=SMOLLM2, options=options, messages=spelled_out)
    assert text(as_chat) == text(pirate)


def test_raw_prompt_and_jinja_templates(ol: ollama.Client, created: list[str]) -> None:
    """raw=True skips the chat template; a request's or a model's Jinja TEMPLATE replaces it."""
    options, prompt = {"num_predict": 10, **GREEDY}, "Once upon a time"
    raw = ol.generate(model=SMOLLM2, prompt=prompt, raw=True, options=options)
    templated = ol.generate(model=SMOLLM2, prompt=prompt, options=options)
    assert (raw.prompt_eval_count or 0) < (templated.prompt_eval_count or 0)
    assert text(raw) != text(templated)
    own = ol.generate(model=SMOLLM2, prompt=prompt, template=RAW_TEMPLATE, options=options)
    created.append("ollama-test-raw")
    ol.create(model="ollama-test-raw", from_=SMOLLM2, template=RAW_TEMPLATE)
    assert ol.show("ollama-test-raw").template == RAW_TEMPLATE
    chat = ol.chat(model="ollama-test-raw", messages=[{"role": "user", "content": prompt}],
                   options=options)  # fmt: skip
    for reply in (own, chat):
        assert (text(reply), reply.prompt_eval_count) == (text(raw), raw.prompt_eval_count)


IMAGE = [{"role": "user", "content": "What is this?", "images": [b"\x89PNG\r\n\x1a\n"]}]
REFUSED = [
    pytest.param(lambda c: c.generate(model=SMOLLM2, prompt="(", suffix=")"),
                 "does not support insert", id="suffix-smollm2"),
    pytest.param(lambda c: c.generate(model=GEMMA3, prompt="(", suffix=")"),
                 "does not support insert", id="suffix-gemma3"),
    pytest.param(lambda c: c.generate(model=GEMMA3, prompt="What?", images=IMAGE[0]["images"]),
                 "does not support images", id="images-generate"),
    pytest.param(lambda c: c.chat(model=GEMMA3, messages=IMAGE), "does not support images",
                 id="images-chat"),
    pytest.param(lambda c: c.pull(SMOLLM2), "BLACKROAD_REGISTRY", id="pull"),
    pytest.param(lambda c: list(c.pull(SMOLLM2, stream=True)), "BLACKROAD_REGISTRY",
                 id="pull-stream"),
    pytest.param(lambda c: c.push(SMOLLM2), "BLACKROAD_REGISTRY", id="push"),
    pytest.param(lambda c: list(c.push(SMOLLM2, stream=True)), "BLACKROAD_REGISTRY",
                 id="push-stream"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "message"), REFUSED)
def test_refused_with_400(ol: ollama.Client, call: Callable[[Any], object], message: str) -> None:
    """Fill-in-the-middle and images on these models; pull and push with no registry set."""
    status, error = refusal(lambda: call(ol))
    assert status == 400 and message in error


# -- keep_alive, /api/ps, eviction ----------------------------------------------------


@pytest.mark.parametrize("endpoint", ["generate", "chat"])
def test_empty_request_loads_and_keep_alive_0_unloads(ol: ollama.Client, endpoint: str) -> None:
    def empty(keep_alive: float | str) -> Reply:
        if endpoint == "chat":
            return ol.chat(model=GEMMA3, messages=[], keep_alive=keep_alive)
        return ol.generate(model=GEMMA3, prompt="", keep_alive=keep_alive)

    loaded = empty("10m")
    assert (loaded.done, loaded.done_reason, text(loaded)) == (True, "load", "")
    assert_expires(ol, GEMMA3, 10)
    assert empty(0).done_reason == "unload"
    assert expires_in(ol, GEMMA3) is None


KEEP_ALIVES = [("10m", 10), (600, 10), ("0.5h", 30), ("1h30m", 90)]


@pytest.mark.parametrize(("keep_alive", "minutes"), KEEP_ALIVES, ids=str)
def test_keep_alive_sets_expires_at(ol: ollama.Client, keep_alive: str | int, minutes: int) -> None:
    ol.generate(model=SMOLLM2, prompt="hi", options={"num_predict": 2}, keep_alive=keep_alive)
    assert_expires(ol, SMOLLM2, minutes)


def test_negative_keep_alive_keeps_the_model_forever(ol: ollama.Client) -> None:
    ol.chat(model=SMOLLM2, messages=HELLO, options={"num_predict": 2}, keep_alive=-1)
    left = expires_in(ol, SMOLLM2)
    ol.generate(model=SMOLLM2, keep_alive="5m")  # back to the default
    assert left is not None and left > timedelta(days=365 * 100)


def test_embed_keeps_the_model_loaded_for_keep_alive(ol: ollama.Client) -> None:
    ol.generate(model=GEMMA3, keep_alive=0)
    ol.embed(model=GEMMA3, input="hello", keep_alive="10m")
    try:
        assert_expires(ol, GEMMA3, 10)  # Ollama lists a model /api/embed loaded
    finally:
        ol.embed(model=GEMMA3, input="hello", keep_alive=0)


def test_least_recently_used_model_is_evicted(tmp_path: Path) -> None:
    with (
        running_server(tmp_path / "home", max_loaded_models="1") as server,
        ollama.Client(host=server.url, timeout=300) as client,
    ):
        client.generate(model=SMOLLM2, prompt="hi", options={"num_predict": 1})
        assert [m.model for m in client.ps().models] == [SMOLLM2]
        client.chat(model=GEMMA3, messages=HELLO, options={"num_predict": 1})
        assert [m.model for m in client.ps().models] == [GEMMA3]
        assert server.alive()


# -- embeddings --------------------------------------------------------------------


def test_embed_string_and_list(ol: ollama.Client) -> None:
    single = ol.embed(model=SMOLLM2, input="a cat")
    assert single.model == SMOLLM2 and len(single.embeddings) == 1
    assert isinstance(single.total_duration, int) and (single.prompt_eval_count or 0) > 0
    several = ol.embed(model=SMOLLM2, input=["a cat", "a car"])
    assert len(several.embeddings) == 2
    assert all(len(v) == 576 and abs(sum(x * x for x in v) - 1) < 1e-3 for v in several.embeddings)
    assert several.embeddings[0] == pytest.approx(single.embeddings[0], abs=1e-5)
    assert several.embeddings[0] != pytest.approx(several.embeddings[1], abs=1e-3)
    assert (several.prompt_eval_count or 0) > (single.prompt_eval_count or 0)


def test_embed_truncate(ol: ollama.Client) -> None:
    long = "hello " * 6000  # more tokens than the 4096-token context
    cut = ol.embed(model=GEMMA3, input=long, truncate=True)
    assert len(cut.embeddings[0]) == 640 and cut.prompt_eval_count == 4096
    status, error = refusal(lambda: ol.embed(model=GEMMA3, input=long, truncate=False))
    assert status == 400 and "4096" in error


def test_legacy_embeddings(ol: ollama.Client) -> None:
    legacy = ol.embeddings(model=SMOLLM2, prompt="a cat")
    assert len(legacy.embedding) == 576
    current = ol.embed(model=SMOLLM2, input="a cat").embeddings[0]
    assert list(legacy.embedding) == pytest.approx(current, abs=1e-5)


# -- create, copy, delete, blobs, pull, push --------------------------------------------


def test_create_from_a_model(ol: ollama.Client, client: openai.OpenAI, created: list[str]) -> None:
    history = [{"role": "user", "content": "Who are you?"},
               {"role": "assistant", "content": "Arr, I be Blackbeard!"}]  # fmt: skip
    parameters = {"num_predict": 12, **GREEDY}
    created.append("ollama-test-pirate")
    done = ol.create(model="ollama-test-pirate", from_=SMOLLM2, system=PIRATE,
                     parameters=parameters, messages=history, license="MIT")  # fmt: skip
    assert done.status == "success"
    shown = ol.show("ollama-test-pirate")
    modelfile = shown.modelfile or ""
    assert f'SYSTEM """{PIRATE}"""' in modelfile and "PARAMETER num_predict 12" in modelfile
    assert 'MESSAGE assistant """Arr, I be Blackbeard!"""' in modelfile
    assert shown.license == "MIT" and "num_predict" in (shown.parameters or "")

    question = {"role": "user", "content": "What do you like?"}
    mine = ol.chat(model="ollama-test-pirate", messages=[question])
    assert (mine.done_reason, mine.eval_count) == ("length", 12)  # its own num_predict
    spelled_out = [{"role": "system", "content": PIRATE}, *history, question]
    assert text(mine) == text(ol.chat(model=SMOLLM2, messages=spelled_out, options=parameters))

    # One catalog: the OpenAI API lists it and serves it with the same settings.
    assert "ollama-test-pirate:latest" in {m.model for m in ol.list().models}
    assert "ollama-test-pirate:latest" in {m.id for m in client.models.list()}
    reply = client.chat.completions.create(
        model="ollama-test-pirate", messages=[{"role": "user", "content": "What do you like?"}]
    )
    assert reply.choices[0].message.content == text(mine)


def test_create_from_a_blob(ol: ollama.Client, server: Server, created: list[str]) -> None:
    path = bundled_models()[SMOLLM2]
    digest = ol.create_blob(path)
    assert digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert httpx.head(f"{server.url}/api/blobs/{digest}", timeout=HTTP_TIMEOUT).status_code == 200
    created.append("ollama-test-blob")
    progress = list(ol.create(model="ollama-test-blob", files={"model.gguf": digest},
                              stream=True))  # fmt: skip
    assert progress[-1].status == "success" and len(progress) > 2
    listed = {m.model: m for m in ol.list().models}["ollama-test-blob:latest"]
    assert listed.size == path.stat().st_size
    reply = ol.generate(model="ollama-test-blob", prompt=STORY, options={"num_predict": 3})
    assert_final(reply, 3)


@pytest.mark.parametrize("base", ["name", "path"])
def test_create_from_a_modelfile(
    ol: ollama.Client, server: Server, created: list[str], base: str
) -> None:
    source = SMOLLM2 if base == "name" else str(bundled_models()[SMOLLM2])
    name = f"ollama-test-modelfile-{base}"
    created.append(name)
    modelfile = f"FROM {source}\nPARAMETER temperature 0\nSYSTEM {PIRATE}\n"
    body = {"model": name, "modelfile": modelfile}
    with httpx.stream("POST", f"{server.url}/api/create", json=body, timeout=120) as response:
        assert response.status_code == 200
        statuses = [json.loads(line)["status"] for line in response.iter_lines() if line]
    assert statuses[0] == "parsing modelfile" and statuses[-1] == "success"
    mine = ol.generate(model=name, prompt="Who are you?", options={"num_predict": 12})
    pirate = ol.generate(model=SMOLLM2, prompt="Who are you?", system=PIRATE,
                         options={"num_predict": 12, "temperature": 0})  # fmt: skip
    assert text(mine) == text(pirate)
    body["modelfile"] = f"{modelfile}ADAPTER ./lora.gguf\n"  # LoRA adapters are not supported
    refused = httpx.post(f"{server.url}/api/create", json=body, timeout=HTTP_TIMEOUT)
    assert refused.status_code == 400 and "ADAPTER" in refused.json()["error"]


def test_copy_and_delete(ol: ollama.Client, created: list[str]) -> None:
    created.append("ollama-test-copy")
    assert ol.copy(SMOLLM2, "ollama-test-copy").status == "success"
    assert "ollama-test-copy:latest" in {m.model for m in ol.list().models}
    assert ol.show("ollama-test-copy").template == ol.show(SMOLLM2).template
    assert ol.delete("ollama-test-copy").status == "success"
    assert "ollama-test-copy:latest" not in {m.model for m in ol.list().models}
    assert refusal(lambda: ol.show("ollama-test-copy"))[0] == 404
    assert refusal(lambda: ol.delete("nope:1b")) == (404, "model 'nope:1b' not found")
    status, error = refusal(lambda: ol.delete(SMOLLM2))
    assert status == 400 and "bundled model" in error


def test_blob_with_a_wrong_digest_is_discarded(server: Server) -> None:
    digest = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    refused = httpx.post(
        f"{server.url}/api/blobs/{digest}", content=b"hello blob", timeout=HTTP_TIMEOUT
    )
    assert refused.status_code == 400 and "digest" in refused.json()["error"]
    assert httpx.head(f"{server.url}/api/blobs/{digest}", timeout=HTTP_TIMEOUT).status_code == 404


def test_chat_continues_a_final_assistant_message(ol: ollama.Client) -> None:
    """As Ollama does; the fleet relies on it to resume a stream on another node."""
    story = [{"role": "user", "content": STORY}]
    pieces = [
        part.message.content or ""
        for part in ol.chat(
            model=SMOLLM2, messages=story, stream=True, options={**GREEDY, "num_predict": 20}
        )
    ]
    partial = [*story, {"role": "assistant", "content": "".join(pieces[:6])}]
    rest = ol.chat(model=SMOLLM2, messages=partial, options={**GREEDY, "num_predict": 14})
    assert rest.message.content == "".join(pieces[6:])
