"""The OpenAI API, driven by the official ``openai`` client: sync, async and streaming."""

from __future__ import annotations

import base64
import json
import sqlite3
import struct
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import GEMMA3, SMOLLM2
from tests.support.same_text import read_prompt
from tests.support.server import HTTP_TIMEOUT, Server

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
STORY: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Tell me a long story about a dragon and a knight."}
]


def requests_table(server: Server) -> list[sqlite3.Row]:
    with sqlite3.connect(server.home / "blackroad.db") as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM requests ORDER BY id").fetchall()


# -- models ------------------------------------------------------------------


def test_models_lists_both_bundled_models(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {GEMMA3, SMOLLM2} <= ids


def test_model_by_id(client: openai.OpenAI) -> None:
    model = client.models.retrieve(SMOLLM2)
    assert (model.id, model.object, model.owned_by) == (SMOLLM2, "model", "blackroad")
    assert model.created > 0


# -- chat completions --------------------------------------------------------


@pytest.mark.parametrize("model", [SMOLLM2, GEMMA3])
def test_chat_completion(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(model=model, messages=HELLO, max_tokens=8)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == model
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_max_tokens_gives_exact_length_and_usage(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=SMOLLM2, messages=STORY, max_tokens=7)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 7


def test_natural_end_is_finish_reason_stop(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=SMOLLM2, messages=HELLO, max_tokens=200, temperature=0
    )
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens < 200


def test_streaming_chat_matches_non_streaming(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {
        "model": SMOLLM2,
        "messages": STORY,
        "max_tokens": 24,
        "temperature": 0,
    }
    read_prompt(client, **kwargs)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(
        client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == "length" and set(finals[:-1]) == {None}
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == 24 and usage == whole.usage


def test_stream_ends_with_done_and_no_usage_unless_asked(server: Server) -> None:
    body = {"model": SMOLLM2, "messages": HELLO, "max_tokens": 3, "stream": True}
    with httpx.stream(
        "POST", f"{server.v1}/chat/completions", json=body, timeout=HTTP_TIMEOUT
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all("usage" not in e for e in events)
    assert {e["object"] for e in events} == {"chat.completion.chunk"}


@pytest.mark.anyio
async def test_async_chat_and_stream(async_client: openai.AsyncOpenAI) -> None:
    reply = await async_client.chat.completions.create(model=SMOLLM2, messages=HELLO, max_tokens=4)
    assert reply.choices[0].message.content is not None
    stream = await async_client.chat.completions.create(
        model=GEMMA3, messages=HELLO, max_tokens=4, stream=True
    )
    pieces = [c.choices[0].delta.content async for c in stream if c.choices]
    assert len(pieces) >= 2


def test_same_seed_same_text(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str | None:
        return (
            client.chat.completions.create(
                model=SMOLLM2, messages=STORY, max_tokens=32, temperature=1.0, seed=seed
            )
            .choices[0]
            .message.content
        )

    first, second, other = sample(1234), sample(1234), sample(99)
    assert first == second
    assert first != other


def test_stop_sequence_split_across_tokens_is_never_emitted(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {
        "model": SMOLLM2,
        "messages": STORY,
        "max_tokens": 40,
        "temperature": 0,
    }
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    assert full is not None and len(full) > 40
    stop = full[20:27]  # seven characters: spans more than one token
    expected = full[: full.index(stop)]

    reply = client.chat.completions.create(**kwargs, stop=[stop])
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(**kwargs, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == expected


@pytest.mark.parametrize("model", [SMOLLM2, GEMMA3])
def test_json_schema_output_validates(client: openai.OpenAI, model: str) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Describe a person as JSON."}],
        max_tokens=400,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        },
    )
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), schema)


def test_json_object_output_parses(client: openai.OpenAI) -> None:
    # A 135M model may ramble past any token limit inside valid JSON; whatever
    # ends by itself must parse, and with a few seeds some reply does end.
    finished = []
    for seed in range(1, 6):
        reply = client.chat.completions.create(
            model=SMOLLM2,
            messages=[{"role": "user", "content": "List three fruits as JSON."}],
            max_tokens=400,
            seed=seed,
            response_format={"type": "json_object"},
        )
        if reply.choices[0].finish_reason == "stop":
            finished.append(json.loads(reply.choices[0].message.content or ""))
    assert finished
    assert all(isinstance(value, dict) for value in finished)


def test_sampling_extensions_are_accepted(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=SMOLLM2,
        messages=HELLO,
        max_tokens=4,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        extra_body={"top_k": 20, "min_p": 0.1, "repeat_penalty": 1.1},
    )
    assert reply.usage is not None and reply.usage.completion_tokens <= 4


def test_a_final_assistant_message_is_continued_with_vllms_fields(client: openai.OpenAI) -> None:
    """How the fleet resumes a stream on another node: the rest, as if never cut."""
    pieces = [
        event.choices[0].delta.content
        for event in client.chat.completions.create(
            model=SMOLLM2, messages=STORY, max_tokens=24, temperature=0, stream=True
        )
        if event.choices and event.choices[0].delta.content
    ]
    partial: list[ChatCompletionMessageParam] = [
        *STORY,
        {"role": "assistant", "content": "".join(pieces[:8])},
    ]
    rest = client.chat.completions.create(
        model=SMOLLM2,
        messages=partial,
        max_tokens=24 - 8,
        temperature=0,
        extra_body={"continue_final_message": True, "add_generation_prompt": False},
    )
    assert rest.choices[0].message.content == "".join(pieces[8:])
    for fields, param in [
        ({"continue_final_message": True}, "add_generation_prompt"),
        ({"continue_final_message": True, "add_generation_prompt": False}, "messages"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=SMOLLM2, messages=STORY, extra_body=fields)
        assert isinstance(refused.value.body, dict) and refused.value.body["param"] == param


# -- completions -------------------------------------------------------------


def test_completion(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=SMOLLM2, prompt="Once upon a time", max_tokens=6)
    assert reply.object == "text_completion"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 6


def test_completion_echo_and_several_prompts(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=SMOLLM2, prompt=["The sky is", "Water is"], max_tokens=3, echo=True
    )
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].text.startswith("The sky is")
    assert reply.choices[1].text.startswith("Water is")
    # Each prompt gets up to 3 tokens; one may end sooner on its own.
    assert reply.usage is not None
    if all(c.finish_reason == "length" for c in reply.choices):
        assert reply.usage.completion_tokens == 6
    assert 2 <= reply.usage.completion_tokens <= 6


def test_streaming_completion_with_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model=GEMMA3,
            prompt="The capital of France is",
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


@pytest.mark.anyio
async def test_async_streaming_completion(async_client: openai.AsyncOpenAI) -> None:
    stream = await async_client.completions.create(
        model=SMOLLM2, prompt="1, 2, 3,", max_tokens=5, stream=True
    )
    text = "".join([c.choices[0].text async for c in stream])
    assert text


# -- embeddings --------------------------------------------------------------


def test_embeddings_float_and_list(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model=SMOLLM2, input=["a cat", "a dog", "a car"])
    assert [d.index for d in result.data] == [0, 1, 2]
    vectors = [d.embedding for d in result.data]
    assert all(len(v) == 576 for v in vectors)
    assert all(abs(sum(x * x for x in v) - 1) < 1e-3 for v in vectors)  # normalized
    assert result.usage.prompt_tokens == result.usage.total_tokens > 0


def test_embeddings_base64_matches_float(server: Server) -> None:
    def embed(encoding: str) -> list[float]:
        body = {"model": GEMMA3, "input": "hello world", "encoding_format": encoding}
        data = httpx.post(f"{server.v1}/embeddings", json=body, timeout=60).json()
        value = data["data"][0]["embedding"]
        if encoding == "float":
            return list(value)
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))

    floats, decoded = embed("float"), embed("base64")
    assert len(floats) == 640
    assert floats == pytest.approx(decoded, abs=1e-6)


@pytest.mark.anyio
async def test_async_embeddings(async_client: openai.AsyncOpenAI) -> None:
    result = await async_client.embeddings.create(model=SMOLLM2, input="hello")
    assert len(result.data) == 1 and len(result.data[0].embedding) == 576


# -- recording ---------------------------------------------------------------


def test_every_request_is_recorded_before_the_response_ends(
    client: openai.OpenAI, server: Server
) -> None:
    before = len(requests_table(server))
    stream = client.chat.completions.create(
        model=SMOLLM2, messages=HELLO, max_tokens=5, stream=True
    )
    list(stream)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope:1b", messages=HELLO)
    rows = requests_table(server)[before:]
    assert len(rows) == 2
    ok, missing = rows
    assert (ok["path"], ok["model"], ok["status"]) == ("/v1/chat/completions", SMOLLM2, 200)
    assert ok["prompt_tokens"] > 0 and ok["completion_tokens"] == 5
    assert 0 < ok["ttft_ms"] <= ok["duration_ms"]
    assert ok["client"] == "127.0.0.1"  # the address only: a port says nothing behind a proxy
    assert (missing["status"], missing["model"]) == (404, "nope:1b")
    assert "does not exist" in missing["error"]
