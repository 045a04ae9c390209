"""A model on an OpenAI-compatible server: llama-server, vLLM, LocalAI, or another BlackRoad.

Only OpenAI's own request fields are sent (``top_k``, ``min_p`` and
``repeat_penalty`` are not among them: strict servers refuse unknown
fields), streams are Server-Sent Events read with ``include_usage`` for
exact token counts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from blackroad.engines.base import (
    Chunk,
    Embeddings,
    Finish,
    FinishReason,
    Message,
    SamplingParams,
)
from blackroad.engines.remote import Event, RemoteEngine, TextOf, get_json
from blackroad.errors import NodeUnavailable


def openai_sampling(params: SamplingParams) -> dict[str, Any]:
    body: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if params.json_schema is not None:
        body["response_format"] = (
            {"type": "json_schema", "json_schema": {"name": "output", "schema": params.json_schema}}
            if params.json_schema
            else {"type": "json_object"}
        )
    return body


class _Events:
    """Parses one SSE stream: text as it comes, then a finish with the usage."""

    def __init__(self, node: str, text_of: TextOf) -> None:
        self.node = node
        self.text_of = text_of
        self.reason: str | None = None

    def __call__(self, line: str) -> Iterator[Chunk]:
        if not line.startswith("data:"):
            return
        data = line[5:].strip()
        if data == "[DONE]":
            return
        event = json.loads(data)
        if "error" in event:
            raise NodeUnavailable(f"the node at {self.node} failed mid-stream: {event['error']}")
        for choice in event.get("choices") or ():
            text = self.text_of(choice) or ""
            self.reason = choice.get("finish_reason") or self.reason
            if text:
                yield Chunk(text)
        usage = event.get("usage")
        if usage and self.reason is not None:
            reason: FinishReason = "length" if self.reason == "length" else "stop"
            yield Chunk(
                "", Finish(reason, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
            )


def _delta(choice: Event) -> str | None:
    content: str | None = (choice.get("delta") or {}).get("content")
    return content


def _text(choice: Event) -> str | None:
    text: str | None = choice.get("text")
    return text


class OpenAIPeer(RemoteEngine):
    @staticmethod
    async def discover(base_url: str, api_key: str | None) -> list[str]:
        listing = await get_json(base_url, "/v1/models", api_key)
        return sorted(str(model["id"]) for model in listing.get("data", []))

    def _stream(self, path: str, body: dict[str, Any], text_of: TextOf) -> AsyncIterator[Chunk]:
        body = {**body, "model": self.model, "stream": True}
        body["stream_options"] = {"include_usage": True}
        return self._lines(path, body, _Events(self.base_url, text_of))

    def stream_chat(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        template: str | None = None,
        continue_final: bool = False,
        truncate: bool = False,
    ) -> AsyncIterator[Chunk]:
        # The OpenAI protocol cannot ask for truncation: a chat too long is refused there.
        self._own_template(template)
        body = {"messages": list(messages), **openai_sampling(params)}
        if continue_final:
            # vLLM's (and BlackRoad's) extension; llama-server continues a
            # final assistant message by itself and ignores the fields.
            body |= {"continue_final_message": True, "add_generation_prompt": False}
        return self._stream("/v1/chat/completions", body, _delta)

    def stream_completion(self, prompt: str, params: SamplingParams) -> AsyncIterator[Chunk]:
        body = {"prompt": prompt, **openai_sampling(params)}
        return self._stream("/v1/completions", body, _text)

    async def embed(self, inputs: Sequence[str], truncate: bool = False) -> Embeddings:
        answer = await self._json("/v1/embeddings", {"model": self.model, "input": list(inputs)})
        vectors = [item["embedding"] for item in sorted(answer["data"], key=lambda d: d["index"])]
        return Embeddings(vectors, answer.get("usage", {}).get("prompt_tokens", 0))
