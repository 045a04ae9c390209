"""A model on an Ollama server (or another BlackRoad), through Ollama's native API.

Every sampling parameter has an Ollama option, so nothing is lost on the way;
streams are NDJSON whose last line carries the counts and timings.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from blackroad.engines.base import (
    OLLAMA_SAMPLING,
    Chunk,
    Embeddings,
    Finish,
    FinishReason,
    Message,
    SamplingParams,
)
from blackroad.engines.remote import Event, LineParser, RemoteEngine, TextOf, get_json
from blackroad.errors import NodeUnavailable


def ollama_options(params: SamplingParams) -> dict[str, Any]:
    options = {name: getattr(params, field) for name, field in OLLAMA_SAMPLING.items()}
    options["stop"] = list(params.stop)
    return {name: value for name, value in options.items() if value is not None}


def _message(event: Event) -> str | None:
    content: str | None = (event.get("message") or {}).get("content")
    return content


def _response(event: Event) -> str | None:
    text: str | None = event.get("response")
    return text


def _parser(node: str, text_of: TextOf) -> LineParser:
    def parse(line: str) -> Iterator[Chunk]:
        if not line.strip():
            return
        event = json.loads(line)
        if "error" in event:
            raise NodeUnavailable(f"the node at {node} failed mid-stream: {event['error']}")
        text = text_of(event) or ""
        if not event.get("done"):
            if text:
                yield Chunk(text)
            return
        reason: FinishReason = "length" if event.get("done_reason") == "length" else "stop"
        finish = Finish(
            reason,
            event.get("prompt_eval_count", 0),
            event.get("eval_count", 0),
            load_ns=event.get("load_duration", 0),
            prompt_eval_ns=event.get("prompt_eval_duration", 0),
            eval_ns=event.get("eval_duration", 0),
        )
        yield Chunk(text, finish)

    return parse


class OllamaPeer(RemoteEngine):
    @staticmethod
    async def discover(base_url: str, api_key: str | None) -> list[str]:
        tags = await get_json(base_url, "/api/tags", api_key)
        return sorted(str(model["name"]) for model in tags.get("models", []))

    def _body(self, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "stream": True}
        body["options"] = ollama_options(params)
        if params.json_schema is not None:
            body["format"] = params.json_schema or "json"
        return body

    def stream_chat(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        template: str | None = None,
        continue_final: bool = False,
        truncate: bool = False,
    ) -> AsyncIterator[Chunk]:
        # Ollama continues a conversation that ends with the assistant's message.
        self._own_template(template)
        # Said either way: Ollama (and a BlackRoad node) truncates unless told not to.
        body = {**self._body(params), "messages": list(messages), "truncate": truncate}
        return self._lines("/api/chat", body, _parser(self.base_url, _message))

    def stream_completion(self, prompt: str, params: SamplingParams) -> AsyncIterator[Chunk]:
        body = {**self._body(params), "prompt": prompt, "raw": True}
        return self._lines("/api/generate", body, _parser(self.base_url, _response))

    async def embed(self, inputs: Sequence[str], truncate: bool = False) -> Embeddings:
        body = {"model": self.model, "input": list(inputs), "truncate": truncate}
        answer = await self._json("/api/embed", body)
        return Embeddings(answer["embeddings"], answer.get("prompt_eval_count", 0))

    async def load(self) -> None:
        await self._json("/api/generate", {"model": self.model})

    async def place(self) -> None:
        """Pull the model from the node's registry, then load it for good (a placed replica)."""
        await self._json("/api/pull", {"model": self.model, "stream": False})
        await self._json("/api/generate", {"model": self.model, "keep_alive": -1})

    async def unload(self) -> None:
        await self._json("/api/generate", {"model": self.model, "keep_alive": 0})
