"""Chat templates: turning a list of messages into the prompt text a model expects.

A model's own Jinja template (``tokenizer.chat_template`` in its GGUF) is
rendered the way llama.cpp and Hugging Face render it: a sandboxed,
immutable Jinja environment with ``trim_blocks``/``lstrip_blocks``, the
``raise_exception`` and ``strftime_now`` helpers and a ``tojson`` filter.
Models without a template get a named built-in one, chosen by architecture.

Only the built-in templates (``templates/*.jinja``, shipped with BlackRoad)
are rendered in this process. Any other (a GGUF's own, a Modelfile's, one
sent with a request) is untrusted: the sandbox stops it reaching Python's
insides but not looping, doubling a string or recursing for as long as it
likes, so it is rendered in a helper process of ``blackroad.bounded``, within
``Bounds.template_seconds``, the helper's memory limit and
``MAX_PROMPT_BYTES`` of output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Any, NoReturn

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from blackroad import bounded
from blackroad.errors import InvalidRequest
from blackroad.models.types import GGUFMetadata

# Architectures whose GGUFs commonly ship without a template, and the turn
# format their instruct variants were trained on. Everything else falls back
# to ChatML, as llama.cpp does.
_BUILTIN_BY_ARCH = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma"}
# Text that ends a turn in each built-in format; generation stops on it even
# when a base model does not treat it as end-of-generation.
_BUILTIN_STOPS = {
    "gemma": ("<end_of_turn>", "<start_of_turn>"),
    "chatml": ("<|im_end|>", "<|im_start|>"),
}
# The largest prompt an untrusted template may render: more than any context holds.
MAX_PROMPT_BYTES = 16 << 20
# The templates that come from outside: what errors call each, and the request
# field they point at.
_UNTRUSTED = {
    "gguf": ("the model's chat template", "messages"),
    "modelfile": ("the Modelfile's template", "messages"),
    "request": ("the request's template", "template"),
}


def _raise_exception(message: str) -> NoReturn:
    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


@lru_cache(maxsize=64)
def _compile(source: str) -> Any:
    return _environment().from_string(source)


def builtin_source(name: str) -> str:
    return resources.files("blackroad.models").joinpath(f"templates/{name}.jinja").read_text()


@dataclass(frozen=True)
class ChatTemplate:
    """A compiled chat template plus the special tokens it refers to."""

    # "gguf" (the model's own), "modelfile", "request" (Ollama's ``template``),
    # else the name of the built-in one
    name: str
    source: str
    bos_token: str
    eos_token: str
    stop: tuple[str, ...] = ()

    @classmethod
    def for_request(cls, metadata: GGUFMetadata, source: str) -> ChatTemplate:
        """The template a request sent (Ollama's ``template``) for this model."""
        return cls("request", source, metadata.bos_token, metadata.eos_token)

    @classmethod
    def for_model(cls, metadata: GGUFMetadata, override: str | None = None) -> ChatTemplate:
        """The template a model is served with: a Modelfile's, the GGUF's, or a built-in."""
        if override:
            return cls("modelfile", override, metadata.bos_token, metadata.eos_token)
        if metadata.chat_template:
            return cls("gguf", metadata.chat_template, metadata.bos_token, metadata.eos_token)
        name = _BUILTIN_BY_ARCH.get(metadata.architecture, "chatml")
        return cls(
            name,
            builtin_source(name),
            metadata.bos_token,
            metadata.eos_token,
            _BUILTIN_STOPS[name],
        )

    @property
    def trusted(self) -> bool:
        """A built-in template (shipped with BlackRoad), so rendered in this process."""
        return self.name in _BUILTIN_STOPS

    def _request(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool
    ) -> dict[str, Any]:
        return {
            "source": self.source,
            "messages": list(messages),
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }

    def _bounds(self) -> dict[str, Any]:
        what, param = _UNTRUSTED.get(self.name, ("the chat template", "messages"))
        seconds = bounded.pool().bounds.template_seconds
        return {"seconds": seconds, "output_bytes": MAX_PROMPT_BYTES, "what": what, "param": param}

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        continue_final: bool = False,
    ) -> str:
        """The prompt for ``messages``; with ``continue_final``, one that goes on with the last.

        Blocks while an untrusted template renders in its helper: call it from
        a thread that may wait (``rendered`` is the event loop's way).

        A continued assistant message is the turns before it, the opening of
        a new assistant turn, and its text so far: templates close every turn
        they render, so the message itself cannot go through the template.
        """
        if continue_final:
            head = self.render(_head(messages), add_generation_prompt=True)
            return head + str(messages[-1].get("content") or "")
        if self.trusted:
            return _render(self._request(messages, add_generation_prompt))
        return str(
            bounded.pool().call(
                RENDER_TASK, self._request(messages, add_generation_prompt), **self._bounds()
            )
        )

    async def rendered(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        continue_final: bool = False,
    ) -> str:
        """``render`` for the event loop: an untrusted template is awaited, never waited on."""
        if continue_final:
            head = await self.rendered(_head(messages), add_generation_prompt=True)
            return head + str(messages[-1].get("content") or "")
        if self.trusted:
            return _render(self._request(messages, add_generation_prompt))
        text = await bounded.pool().run(
            RENDER_TASK, self._request(messages, add_generation_prompt), **self._bounds()
        )
        return str(text)


def _head(messages: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """The turns before a continued assistant message."""
    if not messages or messages[-1].get("role") != "assistant":
        raise InvalidRequest("only an assistant message can be continued", param="messages")
    return messages[:-1]


def _render(request: dict[str, Any]) -> str:
    try:
        return str(
            _compile(request["source"]).render(
                messages=request["messages"],
                add_generation_prompt=request["add_generation_prompt"],
                bos_token=request["bos_token"],
                eos_token=request["eos_token"],
            )
        )
    except TemplateError as exc:
        raise InvalidRequest(
            f"the model's chat template rejected these messages: {exc}", param="messages"
        ) from exc


RENDER_TASK = f"{__name__}:render_task"


def render_task(request: dict[str, Any], _: bytes) -> str:
    """A helper's side of an untrusted template's rendering (``blackroad.bounded``)."""
    return _render(request)
