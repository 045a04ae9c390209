"""Request bodies of the OpenAI API, validated strictly.

Unknown fields are refused (as OpenAI refuses them) rather than silently
ignored, except a few OpenAI fields that change nothing for a local model.
Ranges follow OpenAI's documented limits. ``top_k``, ``min_p`` and
``repeat_penalty`` are llama.cpp extensions that llama-server also accepts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from blackroad.api.extension_types import BlackRoadChat
from blackroad.engines.base import Message
from blackroad.engines.grammar import check_schema, check_size
from blackroad.errors import InvalidRequest
from blackroad.service.tools import ToolPlan, plan, tool


class _Strict(BaseModel):
    # strict: no "1" for 1 or 1 for true; an int is still a valid float.
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: dict[str, Any]


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Strict):
    name: str
    arguments: str


class ToolCallIn(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionSpec(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolSpec(_Strict):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    def rendered(self, index: int, tool_names: Mapping[str, str]) -> Message:
        """This message as ``service.tools.text_turns`` reads it."""
        turn: dict[str, Any] = {
            "role": "system" if self.role == "developer" else self.role,
            "content": self.text(index),
        }
        if self.role == "tool":
            if not self.tool_call_id:
                raise InvalidRequest(
                    "a message with role tool needs a tool_call_id",
                    param=f"messages[{index}].tool_call_id",
                )
            turn["name"] = tool_names.get(self.tool_call_id)
        if self.tool_calls:
            turn["tool_calls"] = [
                {"name": c.function.name, "arguments": _arguments(c.function.arguments, index)}
                for c in self.tool_calls
            ]
        return turn

    def text(self, index: int) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        for part in self.content:
            if isinstance(part, ImagePart):
                raise InvalidRequest(
                    "this model accepts text only; image_url content is not supported",
                    param=f"messages[{index}].content",
                )
        return "".join(part.text for part in self.content if isinstance(part, TextPart))


def _arguments(text: str, index: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            "tool call arguments must be JSON", param=f"messages[{index}].tool_calls"
        ) from exc


class StreamOptions(_Strict):
    include_usage: bool = False


class JsonSchemaSpec(_Strict):
    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


Stop = str | Annotated[list[str], Field(max_length=4)] | None


class SamplingFields(_Strict):
    """The fields shared by /v1/chat/completions and /v1/completions."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, gt=0)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    stop: Stop = None
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Accepted because clients send them by default; they change nothing here.
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None

    def output_limit(self) -> int | None:
        return self.max_tokens

    def json_schema(self) -> dict[str, Any] | None:
        return None

    def sampling(self) -> dict[str, Any]:
        """The sampling fields this request sets, by ``SamplingParams`` name."""
        fields = {
            "max_tokens": self.output_limit(),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "stop": (self.stop,) if isinstance(self.stop, str) else self.stop,
            "seed": self.seed,
            "json_schema": self.json_schema(),
        }
        return {name: value for name, value in fields.items() if value is not None}

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: ResponseFormat | None = None
    # vLLM's extension, which the fleet uses to resume a stream on another
    # node: continue the final assistant message instead of answering it.
    continue_final_message: bool = False
    add_generation_prompt: bool = True
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # BlackRoad's extension: a stored conversation, memories, knowledge bases.
    blackroad: BlackRoadChat | None = None

    def tool_plan(self) -> ToolPlan:
        """The tools offered and how the answer is constrained ("none" without tools)."""
        specs = [
            tool(t.function.name, t.function.description, t.function.parameters,
                 f"tools[{i}].function.parameters")
            for i, t in enumerate(self.tools or [])
        ]  # fmt: skip
        choice = self.tool_choice
        if choice is not None and not specs:
            raise InvalidRequest("tool_choice is only allowed when tools are given", "tool_choice")
        if isinstance(choice, NamedToolChoice):
            return plan(specs, choice.function.name, self.parallel_tool_calls)
        return plan(specs, choice, self.parallel_tool_calls)

    def continue_final(self) -> bool:
        if not self.continue_final_message:
            return False
        if self.add_generation_prompt:
            raise InvalidRequest(
                "continue_final_message needs add_generation_prompt false",
                param="add_generation_prompt",
            )
        if self.messages[-1].role != "assistant":
            raise InvalidRequest(
                "continue_final_message needs the last message to be the assistant's",
                param="messages",
            )
        return True

    def json_schema(self) -> dict[str, Any] | None:
        tools_schema = self.tool_plan().schema()
        if tools_schema is not None:
            check_size(tools_schema, "tools")  # each tool's schema was checked on its own
            return tools_schema
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return {}
        if fmt.json_schema is None:
            raise InvalidRequest(
                "response_format of type json_schema needs a json_schema object",
                param="response_format.json_schema",
            )
        schema = fmt.json_schema.schema_ or {"type": "object"}
        check_schema(schema, "response_format")
        return schema

    def rendered_messages(self) -> list[Message]:
        """Messages as chat templates expect them: plain text, ``developer`` as ``system``,
        tools described in the system message, calls and results as text turns."""
        names = {c.id: c.function.name for m in self.messages for c in m.tool_calls or []}
        turns = [m.rendered(i, names) for i, m in enumerate(self.messages)]
        return self.tool_plan().offered(turns)

    def output_limit(self) -> int | None:
        return self.max_tokens if self.max_completion_tokens is None else self.max_completion_tokens


class CompletionRequest(SamplingFields):
    prompt: str | Annotated[list[str], Field(min_length=1)]
    echo: bool = False

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class EmbeddingRequest(_Strict):
    model: str = Field(min_length=1)
    input: str | Annotated[list[str], Field(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    def inputs(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        for index, text in enumerate(texts):
            if not text:
                param = "input" if isinstance(self.input, str) else f"input[{index}]"
                raise InvalidRequest("input must not be an empty string", param=param)
        return texts
