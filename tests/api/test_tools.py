"""Tool calling in both APIs, driven by the official clients against the bundled smollm2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import jsonschema
import ollama
import openai
import pytest
from openai.types.chat import (
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from blackroad.service.tools import CallStream
from tests.conftest import SMOLLM2
from tests.support.same_text import read_ollama_prompt, read_prompt
from tests.support.server import Server

WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
TIME_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 40}},
    "required": ["timezone"],
}
SCHEMAS = {"get_weather": WEATHER_PARAMETERS, "get_time": TIME_PARAMETERS}
TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": WEATHER_PARAMETERS,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The current time in a timezone",
            "parameters": TIME_PARAMETERS,
        },
    },
]
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather in Paris and the time in Tokyo?"}
]
SEED, MAX_TOKENS = 7, 200
OPTIONS = {"temperature": 0, "seed": SEED, "num_predict": MAX_TOKENS}
FIXED: dict[str, Any] = {"temperature": 0, "seed": SEED, "max_tokens": MAX_TOKENS}


def assert_valid_call(name: str, arguments: str) -> dict[str, Any]:
    parsed = json.loads(arguments)
    jsonschema.validate(parsed, SCHEMAS[name])
    return dict(parsed)


def function_calls(message: ChatCompletionMessage) -> list[ChatCompletionMessageFunctionToolCall]:
    calls = message.tool_calls or []
    assert all(isinstance(c, ChatCompletionMessageFunctionToolCall) for c in calls)
    return [c for c in calls if isinstance(c, ChatCompletionMessageFunctionToolCall)]


# -- OpenAI ----------------------------------------------------------------------------


@pytest.mark.parametrize("choice", ["required", "auto"])
def test_openai_tool_calls_parse_and_validate(
    client: openai.OpenAI, choice: Literal["required", "auto"]
) -> None:
    reply = client.chat.completions.create(
        model=SMOLLM2,
        messages=ASK,
        tools=TOOLS,
        tool_choice=choice,
        **FIXED,
    )
    choice_ = reply.choices[0]
    calls = function_calls(choice_.message)
    if choice == "required":
        assert calls and choice_.finish_reason == "tool_calls"
    if calls:
        assert choice_.message.content is None and choice_.finish_reason == "tool_calls"
    else:  # auto may answer in text
        assert choice_.message.content and choice_.finish_reason in ("stop", "length")
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert_valid_call(call.function.name, call.function.arguments)
    assert len({call.id for call in calls}) == len(calls)
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_openai_named_tool_choice(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=SMOLLM2,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        **FIXED,
    )
    calls = function_calls(reply.choices[0].message)
    assert calls and {c.function.name for c in calls} == {"get_time"}
    for call in calls:
        assert_valid_call(call.function.name, call.function.arguments)


def test_openai_tool_choice_none_answers_in_text(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=SMOLLM2,
        messages=ASK,
        tools=TOOLS,
        tool_choice="none",
        **FIXED,
    )
    message = reply.choices[0].message
    assert message.tool_calls is None and message.content
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_openai_parallel_tool_calls_false_gives_one_call(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=SMOLLM2,
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        **FIXED,
    )
    calls = function_calls(reply.choices[0].message)
    assert len(calls) == 1
    assert_valid_call(calls[0].function.name, calls[0].function.arguments)


def test_openai_streamed_tool_calls_accumulate(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model=SMOLLM2,
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        **FIXED,
    ) as stream:
        deltas = [
            call
            for event in stream
            if event.type == "chunk" and event.chunk.choices
            for call in event.chunk.choices[0].delta.tool_calls or []
        ]
        final = stream.get_final_completion()
    # Each call opens with its index, id, type and name and empty arguments.
    openings = [d for d in deltas if d.id is not None]
    assert openings and all(d.type == "function" and d.function for d in openings)
    assert [d.index for d in openings] == list(range(len(openings)))
    assert all(d.function is not None and d.function.arguments == "" for d in openings)
    # Then its arguments accumulate as the model writes them, a few tokens a delta.
    for opening in openings:
        pieces = [d for d in deltas if d.index == opening.index and d.id is None]
        assert len(pieces) > 1 and deltas.index(pieces[0]) > deltas.index(opening)
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = function_calls(choice.message)
    assert [c.id for c in calls] == [d.id for d in openings]
    for call in calls:
        assert_valid_call(call.function.name, call.function.arguments)


CALLS = (
    '{"tool_calls": [{"name": "get_weather",'
    ' "arguments": {"city": "Pa\\"}ris", "unit": "celsius"}},'
    ' {"name":"get_time","arguments":{"timezone":"Asia/Tokyo"}}]}'
)


@pytest.mark.parametrize("size", [1, 2, 7, len(CALLS)])
def test_a_call_stream_gives_each_calls_start_then_its_arguments(size: int) -> None:
    stream, parts = CallStream(), []
    for start in range(0, len(CALLS), size):
        parts += stream.feed(CALLS[start : start + size])
    starts = [(p.index, p.name) for p in parts if p.id is not None]
    assert starts == [(0, "get_weather"), (1, "get_time")]
    arguments = {i: "".join(p.arguments for p in parts if p.index == i) for i in (0, 1)}
    assert json.loads(arguments[0]) == {"city": 'Pa"}ris', "unit": "celsius"}
    assert json.loads(arguments[1]) == {"timezone": "Asia/Tokyo"}
    assert not CallStream().feed('{"content": "{\\"tool_calls\\": []}"}')  # text is no call


# Asked alone for a haiku, smollm2 picks text over a call by 0.04 to 0.7 logits, less
# than the batch shape moves them (tests/support/same_text.py). After two earlier answers
# in the JSON that constrained them, it opens '{"' by 1.2 logits or more, then "content"
# by 10 (measured on CPUs with and without AVX-512, in both APIs' renderings of TOOLS).
MOON = "Silver light above,\nquiet on the sleeping hills,\nnight holds its breath."
WIND = "Through the bending grass,\nan old voice without a face,\ncarries the spring rain."
HAIKUS: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a haiku about the moon."},
    {"role": "assistant", "content": json.dumps({"content": MOON})},
    {"role": "user", "content": "Write a haiku about the wind."},
    {"role": "assistant", "content": json.dumps({"content": WIND})},
    {"role": "user", "content": "Write a haiku about the sea."},
]


def test_openai_auto_text_answer_streams_as_content(client: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": SMOLLM2, "messages": HAIKUS, "tools": TOOLS, "tool_choice": "auto", **FIXED
    }  # fmt: skip
    read_prompt(client, **request)
    whole = client.chat.completions.create(**request)
    message = whole.choices[0].message
    assert message.tool_calls is None and message.content
    assert not message.content.lstrip().startswith("{")  # the answer, not its JSON
    streamed = client.chat.completions.create(**request, stream=True)
    chunks = list(streamed)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1 and "".join(pieces) == message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)


def test_openai_follow_up_with_tool_result_answers_in_text(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=SMOLLM2,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        **FIXED,
    )
    call = function_calls(first.choices[0].message)[0]
    follow_up: list[ChatCompletionMessageParam] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18, "sky": "clear"}'},
    ]
    read_prompt(client, model=SMOLLM2, messages=follow_up, **FIXED)  # as with tools unoffered
    reply = client.chat.completions.create(
        model=SMOLLM2,
        messages=follow_up,
        tools=TOOLS,
        tool_choice="none",
        **FIXED,
    )
    assert reply.choices[0].message.content and reply.choices[0].message.tool_calls is None
    streamed = client.chat.completions.create(
        model=SMOLLM2,
        messages=follow_up,
        stream=True,
        **FIXED,
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == reply.choices[0].message.content


BAD_TOOL: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": "broken", "parameters": {"type": "nonsense"}}}
]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tools": BAD_TOOL}, "tools[0].function.parameters"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"messages": [*ASK, {"role": "tool", "content": "18 degrees"}]},
            "messages[1].tool_call_id",
        ),
    ],
)
def test_openai_bad_tool_input_is_400(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    request: dict[str, Any] = {"model": SMOLLM2, "messages": ASK, **FIXED, **extra}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(**request)
    assert refused.value.param == param
    assert client.chat.completions.create(model=SMOLLM2, messages=ASK, max_tokens=2).choices


# -- Ollama ----------------------------------------------------------------------------

OLLAMA_ASK = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]


@pytest.fixture
def ol(server: Server) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.url, timeout=300) as client:
        yield client


def assert_valid_ollama_calls(message: ollama.Message) -> list[ollama.Message.ToolCall]:
    calls = list(message.tool_calls or [])
    for call in calls:
        assert isinstance(call.function.arguments, dict)
        jsonschema.validate(call.function.arguments, SCHEMAS[call.function.name])
    return calls


def test_ollama_tool_calls_have_object_arguments(ol: ollama.Client) -> None:
    reply = ol.chat(SMOLLM2, messages=OLLAMA_ASK, tools=[dict(t) for t in TOOLS], options=OPTIONS)
    calls = assert_valid_ollama_calls(reply.message)
    assert calls and calls[0].function.name == "get_weather"
    assert reply.message.content == "" and reply.done
    assert reply.eval_count and reply.eval_count > 0


def test_ollama_streamed_tool_calls(ol: ollama.Client) -> None:
    tools = [dict(t) for t in TOOLS]
    read_ollama_prompt(ol, "chat", model=SMOLLM2, messages=OLLAMA_ASK, tools=tools, options=OPTIONS)
    parts = list(ol.chat(SMOLLM2, messages=OLLAMA_ASK, tools=tools, options=OPTIONS, stream=True))
    with_calls = [p for p in parts if p.message.tool_calls]
    assert len(with_calls) == 1 and not with_calls[0].done and parts[-1].done
    streamed = assert_valid_ollama_calls(with_calls[0].message)
    whole = ol.chat(SMOLLM2, messages=OLLAMA_ASK, tools=tools, options=OPTIONS)
    assert [c.function for c in streamed] == [c.function for c in whole.message.tool_calls or []]


def test_ollama_text_answer_streams_as_content(ol: ollama.Client) -> None:
    haiku = [dict(m) for m in HAIKUS]
    tools = [dict(t) for t in TOOLS]
    read_ollama_prompt(ol, "chat", model=SMOLLM2, messages=haiku, tools=tools, options=OPTIONS)
    whole = ol.chat(SMOLLM2, messages=haiku, tools=tools, options=OPTIONS)
    assert whole.message.content and not whole.message.tool_calls
    parts = list(ol.chat(SMOLLM2, messages=haiku, tools=tools, options=OPTIONS, stream=True))
    pieces = [p.message.content for p in parts if p.message.content]
    assert len(pieces) > 1 and "".join(pieces) == whole.message.content


def test_ollama_follow_up_with_tool_result(ol: ollama.Client) -> None:
    first = ol.chat(SMOLLM2, messages=OLLAMA_ASK, tools=[dict(t) for t in TOOLS], options=OPTIONS)
    call = (first.message.tool_calls or [])[0]
    follow_up: list[dict[str, Any]] = [
        *OLLAMA_ASK,
        {"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_name": call.function.name, "content": "18 degrees, clear sky"},
    ]
    reply = ol.chat(SMOLLM2, messages=follow_up, options=OPTIONS)
    assert reply.message.content and not reply.message.tool_calls


def test_ollama_bad_tool_is_400_and_server_still_serves(ol: ollama.Client) -> None:
    # The client checks a schema's top-level type itself: a property's type is sent as is.
    parameters = {"type": "object", "properties": {"a": {"type": "nonsense"}}}
    broken = {"type": "function", "function": {"name": "broken", "parameters": parameters}}
    with pytest.raises(ollama.ResponseError) as refused:
        ol.chat(SMOLLM2, messages=OLLAMA_ASK, tools=[broken])
    assert refused.value.status_code == 400 and "invalid JSON schema" in refused.value.error
    assert ol.chat(SMOLLM2, messages=OLLAMA_ASK, options={"num_predict": 2}).done
