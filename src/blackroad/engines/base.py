"""The engine contract: what every inference backend must do.

An engine serves one model. It streams chat and completion tokens, embeds,
tokenizes, loads and unloads, and reports its health. Adapters (embedded
llama.cpp, and models on remote Ollama and OpenAI-compatible nodes)
implement this and nothing else: they know nothing about routes, users or
audit.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from blackroad.errors import InvalidRequest

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. Defaults are llama.cpp's."""

    max_tokens: int | None = None  # None: until end of generation or the context is full
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Constrain output to JSON: ``{}`` for any JSON object, else a JSON schema.
    json_schema: Mapping[str, Any] | None = None


# Ollama's option names (also a Modelfile's PARAMETER names) -> SamplingParams.
OLLAMA_SAMPLING = {
    "num_predict": "max_tokens",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed",
    "stop": "stop",
}


@dataclass(frozen=True)
class Chunk:
    """A piece of generated text; the last chunk of a stream carries ``finish``."""

    text: str
    finish: Finish | None = None


@dataclass(frozen=True)
class Finish:
    """How a generation ended, with exact token counts and timings."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    # Nanoseconds, as Ollama reports them.
    load_ns: int = 0
    prompt_eval_ns: int = 0
    eval_ns: int = 0


async def collect(stream: AsyncIterator[Chunk]) -> tuple[str, Finish]:
    """A whole reply: its text and how it finished."""
    parts: list[str] = []
    finish: Finish | None = None
    async for chunk in stream:
        parts.append(chunk.text)
        finish = chunk.finish or finish
    assert finish is not None, "an engine stream always ends with a finish"
    return "".join(parts), finish


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int


@dataclass(frozen=True)
class CacheHealth:
    """The prefix KV cache of a loaded model, counted since it loaded."""

    prompts: int
    prompt_tokens: int
    reused_tokens: int  # prompt tokens found in the cache instead of read again
    cached_tokens: int  # tokens whose keys and values are held now
    capacity_tokens: int

    @property
    def hit_rate(self) -> float:
        return self.reused_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


@dataclass(frozen=True)
class EngineHealth:
    model: str
    loaded: bool
    busy: bool
    queued: int
    active: int = 0  # generations and calls running now
    cache: CacheHealth | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Message = Mapping[str, Any]


class Engine(abc.ABC):
    """One model, served by one backend."""

    model: str

    @abc.abstractmethod
    def stream_chat(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        template: str | None = None,
        continue_final: bool = False,
        truncate: bool = False,
    ) -> AsyncIterator[Chunk]:
        """Stream the assistant's reply to ``messages``; the last chunk has ``finish``.

        ``template`` replaces the model's chat template for this request. With
        ``continue_final`` the last message is the assistant's, and the reply
        continues its text instead of starting a new turn (how the fleet
        resumes a stream whose node died). With ``truncate``, a chat too long
        for the context loses its oldest messages (``engines/history.py``)
        instead of being refused.
        """

    @abc.abstractmethod
    def stream_completion(self, prompt: str, params: SamplingParams) -> AsyncIterator[Chunk]:
        """Stream the continuation of raw ``prompt``; the last chunk has ``finish``."""

    def stream_infill(
        self, prefix: str, suffix: str, params: SamplingParams
    ) -> AsyncIterator[Chunk]:
        """Stream the text between ``prefix`` and ``suffix`` (fill-in-the-middle)."""
        raise InvalidRequest(f"{self.model} does not support insert", param="suffix")

    @abc.abstractmethod
    async def embed(self, inputs: Sequence[str], truncate: bool = False) -> Embeddings:
        """One normalized vector per input; too long an input is cut if ``truncate``."""

    @abc.abstractmethod
    async def tokenize(self, text: str) -> list[int]: ...

    @abc.abstractmethod
    async def detokenize(self, tokens: Sequence[int]) -> str: ...

    @abc.abstractmethod
    async def load(self) -> None: ...

    @abc.abstractmethod
    async def unload(self) -> None: ...

    @abc.abstractmethod
    def health(self) -> EngineHealth: ...
