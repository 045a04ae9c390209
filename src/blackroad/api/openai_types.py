"""Request bodies of the OpenAI API, validated strictly.

Unknown fields are refused (as OpenAI refuses them) rather than silently
ignored, except a few OpenAI fields that change nothing for a local model.
Ranges follow OpenAI's documented limits. ``top_k``, ``min_p`` and
``repeat_penalty`` are llama.cpp extensions that llama-server also accepts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from blackroad.api.extension_types import BlackRoadChat
from blackroad.errors import InvalidRequest


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


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

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
    # BlackRoad's extension: a stored conversation, memories, knowledge bases.
    blackroad: BlackRoadChat | None = None

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
        return fmt.json_schema.schema_ or {"type": "object"}

    def rendered_messages(self) -> list[dict[str, str]]:
        """Messages as chat templates expect them: plain text, ``developer`` as ``system``."""
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text(i)}
            for i, m in enumerate(self.messages)
        ]

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
