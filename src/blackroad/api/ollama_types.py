"""Request bodies of the Ollama API, validated strictly (types as Ollama's Go decoder).

Field names and defaults follow Ollama's docs/api.md: ``stream`` defaults to
true, ``keep_alive`` is a duration string or a number of seconds, ``options``
holds llama.cpp-style settings. Older clients send ``name`` where newer ones
send ``model``; both are accepted.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from blackroad.api.extension_types import BlackRoadChat
from blackroad.engines.base import OLLAMA_SAMPLING, Message
from blackroad.engines.grammar import check_schema, check_size
from blackroad.errors import InvalidRequest
from blackroad.service.inference import sampling_from_ollama
from blackroad.service.tools import ToolPlan, plan, tool

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | float | None, param: str = "keep_alive") -> float | None:
    """Seconds from Ollama's keep_alive: ``"5m"``, ``"1h30m"``, ``"-1"``, ``300``..."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    parts = _DURATION_PART.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise InvalidRequest(f'invalid duration "{value}": use e.g. "5m", "1h30m" or -1', param)
    return sign * sum(float(n) * _UNITS[u] for n, u in parts)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class _Named(_Request):
    # Older clients send ``name`` where newer ones send ``model``.
    model: str = Field(min_length=1, validation_alias=AliasChoices("model", "name"))

    @property
    def model_name(self) -> str:
        return self.model


class Options(_Request):
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    num_predict: int | None = Field(default=None, ge=-2)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    temperature: float | None = Field(default=None, ge=0)
    repeat_penalty: float | None = Field(default=None, gt=0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: list[str] | None = None
    num_ctx: int | None = Field(default=None, ge=16)
    num_thread: int | None = Field(default=None, ge=1, le=1024)
    # Samplers BlackRoad does not run: only their neutral values are accepted.
    typical_p: float | None = None
    tfs_z: float | None = None
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    repeat_last_n: int | None = None
    # Placement on hardware: accepted for compatibility, no effect on a CPU node.
    num_keep: int | None = None
    num_batch: int | None = None
    num_gpu: int | None = None
    main_gpu: int | None = None
    use_mmap: bool | None = None
    use_mlock: bool | None = None
    numa: bool | None = None
    low_vram: bool | None = None
    f16_kv: bool | None = None
    vocab_only: bool | None = None
    penalize_newline: bool | None = None

    @model_validator(mode="after")
    def _supported(self) -> Options:
        neutral = {"typical_p": 1.0, "tfs_z": 1.0, "mirostat": 0, "repeat_last_n": 64}
        for field, value in neutral.items():
            given = getattr(self, field)
            if given is not None and given != value:
                raise ValueError(f"option {field}={given} is not supported (only {value})")
        return self

    def sampling(self) -> dict[str, Any]:
        """The options that pick tokens, by Ollama name, as far as they are set."""
        return {k: v for k in OLLAMA_SAMPLING if (v := getattr(self, k)) is not None}


Format = Literal["json"] | dict[str, Any] | None


def json_schema(fmt: Format) -> dict[str, Any] | None:
    if fmt is None:
        return None
    if fmt == "json":
        return {}
    check_schema(fmt, "format")
    return dict(fmt)


class _Inference(_Named):
    options: Options | None = None
    stream: bool = True
    keep_alive: str | float | None = None
    format: Format = None
    think: bool | str | None = None

    def keep_alive_seconds(self) -> float | None:
        return parse_duration(self.keep_alive)

    def overrides(self) -> dict[str, Any]:
        """Sampling fields (by ``SamplingParams`` name) this request sets."""
        fields = sampling_from_ollama(self.options.sampling() if self.options else {})
        if self.format is not None:
            fields["json_schema"] = json_schema(self.format)
        return fields


class GenerateRequest(_Inference):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    raw: bool = False
    images: list[str] | None = None
    context: list[int] | None = None


class ChatMessage(_Request):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    thinking: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None

    def rendered(self, index: int) -> Message:
        """This message as ``service.tools.text_turns`` reads it."""
        turn: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.role == "tool":
            turn["name"] = self.tool_name
        if self.tool_calls:
            turn["tool_calls"] = [
                _call(c, f"messages[{index}].tool_calls") for c in self.tool_calls
            ]
        return turn


def _call(call: dict[str, Any], param: str) -> dict[str, Any]:
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequest("a tool call needs a function with a name", param=param)
    arguments = function.get("arguments", {})
    if not isinstance(arguments, dict):
        raise InvalidRequest("tool call arguments must be a JSON object", param=param)
    return {"name": function["name"], "arguments": arguments}


class ChatRequest(_Inference):
    messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    # Ollama's: a chat too long for the context loses its oldest messages, unless false.
    truncate: bool = True
    # BlackRoad's extension: a stored conversation, memories, knowledge bases.
    blackroad: BlackRoadChat | None = None

    def tool_plan(self) -> ToolPlan:
        """The tools offered; Ollama has no tool_choice, so the model may answer in text."""
        specs = []
        for index, spec in enumerate(self.tools or []):
            function = spec.get("function")
            if spec.get("type", "function") != "function" or not isinstance(function, dict):
                raise InvalidRequest("a tool needs type function and a function", f"tools[{index}]")
            name = function.get("name")
            if not isinstance(name, str) or not name:
                raise InvalidRequest("a tool's function needs a name", f"tools[{index}].function")
            description = function.get("description")
            parameters = function.get("parameters")
            param = f"tools[{index}].function.parameters"
            specs.append(tool(name, description if isinstance(description, str) else None,
                              _without_nulls(parameters), param))  # fmt: skip
        return plan(specs, "auto")

    def rendered_messages(self) -> list[Message]:
        """Messages as text turns, the tools described in the system message."""
        return self.tool_plan().offered([m.rendered(i) for i, m in enumerate(self.messages)])

    def overrides(self) -> dict[str, Any]:
        fields = super().overrides()
        tools_schema = self.tool_plan().schema()
        if tools_schema is not None:
            check_size(tools_schema, "tools")  # each tool's schema was checked on its own
            fields["json_schema"] = tools_schema
        return fields


def _without_nulls(schema: Any) -> Any:
    """The official client sends its schema model's unset fields (``"$defs": null``) as nulls."""
    if isinstance(schema, dict):
        return {k: _without_nulls(v) for k, v in schema.items() if v is not None}
    if isinstance(schema, list):
        return [_without_nulls(v) for v in schema]
    return schema


class EmbedRequest(_Named):
    input: str | list[str]
    truncate: bool = True
    options: Options | None = None
    keep_alive: str | float | None = None
    dimensions: int | None = Field(default=None, ge=1)


class EmbeddingsRequest(_Named):
    prompt: str
    options: Options | None = None
    keep_alive: str | float | None = None


class ShowRequest(_Named):
    verbose: bool = False


class DeleteRequest(_Named):
    pass


class CopyRequest(_Request):
    source: str
    destination: str


class TransferRequest(_Named):
    insecure: bool = False
    stream: bool = True


class CreateRequest(_Named):
    modelfile: str | None = None
    from_: str | None = Field(default=None, alias="from")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    license: str | list[str] | None = None
    system: str | None = None
    parameters: dict[str, Any] | None = None
    messages: list[ChatMessage] | None = None
    quantize: str | None = None
    stream: bool = True
    path: str | None = None  # very old clients: a Modelfile path on the server
