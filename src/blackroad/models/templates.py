"""Chat templates: turning a list of messages into the prompt text a model expects.

A model's own Jinja template (``tokenizer.chat_template`` in its GGUF) is
rendered the way llama.cpp and Hugging Face render it: a sandboxed,
immutable Jinja environment with ``trim_blocks``/``lstrip_blocks``, the
``raise_exception`` and ``strftime_now`` helpers and a ``tojson`` filter.
Models without a template get a named built-in one, chosen by architecture.
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

    name: str  # "gguf" for the model's own template, else the built-in's name
    source: str
    bos_token: str
    eos_token: str
    stop: tuple[str, ...] = ()

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

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        continue_final: bool = False,
    ) -> str:
        """The prompt for ``messages``; with ``continue_final``, one that goes on with the last.

        A continued assistant message is the turns before it, the opening of
        a new assistant turn, and its text so far: templates close every turn
        they render, so the message itself cannot go through the template.
        """
        if continue_final:
            if not messages or messages[-1].get("role") != "assistant":
                raise InvalidRequest("only an assistant message can be continued", param="messages")
            head = self.render(messages[:-1], add_generation_prompt=True)
            return head + str(messages[-1].get("content") or "")
        try:
            return str(
                _compile(self.source).render(
                    messages=list(messages),
                    add_generation_prompt=add_generation_prompt,
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                )
            )
        except TemplateError as exc:
            raise InvalidRequest(
                f"the model's chat template rejected these messages: {exc}", param="messages"
            ) from exc
