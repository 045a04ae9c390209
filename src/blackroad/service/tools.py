"""Tool calling for both APIs: from tools and a tool choice to a constrained answer and back.

One plan serves OpenAI (``tools``, ``tool_choice``, ``parallel_tool_calls``)
and Ollama (``tools``, always "auto"). The model is told about the tools in a
system-message section (name, description and parameters as JSON), and its
answer is constrained by a JSON schema that the engine compiles to a
llama.cpp grammar (``SamplingParams.json_schema``, the same path as
``response_format``), so even a small model emits calls that parse:

- "required" or a named function: ``{"tool_calls": [{"name": <enum>, "arguments":
  <that tool's parameters>}]}``, one call unless ``parallel`` (then at most one
  per tool offered: small models otherwise repeat a call until max_tokens);
- "auto": a oneOf between that shape and a text answer ``{"content": string}``;
- "none": no constraint and the tools are not offered.

The constrained output is parsed back into calls with ids (``call_<random>``)
whose arguments are validated with ``jsonschema`` against the tool's
parameters; output that does not parse (a reply cut short by max_tokens) is
returned as text. Streams send a text answer as content while it grows
(``TextStream``, decoding the JSON string as it is written), and each call as
it is written (``CallStream``): its id and name once the name is whole, then
its arguments' JSON text as it grows. Earlier assistant calls and tool results are rendered as
plain text turns (results as user turns, consecutive ones merged), so any
chat template, Gemma's strict alternation included, accepts a follow-up.
Because the plan becomes a JSON schema and messages, a request forwarded to a
peer carries it as ``response_format``/``format``: the peer needs no tool support.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema

from blackroad.engines.base import Message
from blackroad.engines.grammar import check_schema
from blackroad.errors import InvalidRequest

ToolMode = Literal["none", "auto", "required"]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True)
class Answer:
    """A constrained reply read back: text, or calls (then ``content`` is None)."""

    content: str | None
    calls: list[ToolCall] = field(default_factory=list)


def tool(name: str, description: str | None, parameters: Any, param: str) -> Tool:
    """A tool whose parameters are a valid JSON schema (an object schema when empty)."""
    schema = parameters if parameters else {"type": "object", "properties": {}}
    if not isinstance(schema, dict):
        raise InvalidRequest("a tool's parameters must be a JSON schema object", param=param)
    check_schema(schema, param)  # its grammar must stay small enough to build and use
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(
            f"invalid JSON schema for tool '{name}': {exc.message}", param=param
        ) from exc
    return Tool(name, description or "", schema)


@dataclass(frozen=True)
class ToolPlan:
    """The tools offered and how the model must answer."""

    tools: tuple[Tool, ...]
    mode: ToolMode
    parallel: bool = True

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.mode != "none"

    def schema(self) -> dict[str, Any] | None:
        """The JSON schema of the constrained answer; None when tools are not in play."""
        if not self.active:
            return None
        schemas = [_call_schema(t) for t in self.tools]
        one_call = schemas[0] if len(schemas) == 1 else {"oneOf": schemas}
        # Small models repeat a call until max_tokens: parallel calls are bounded by
        # the number of tools offered (a named choice is therefore one call).
        limit = len(self.tools) if self.parallel else 1
        calls = {"type": "array", "items": one_call, "minItems": 1, "maxItems": limit}
        call_shape = {
            "type": "object",
            "properties": {"tool_calls": calls},
            "required": ["tool_calls"],
            "additionalProperties": False,
        }
        if self.mode == "required":
            return call_shape
        text_shape = {
            "type": "object",
            "properties": {"content": {"type": "string"}},
            "required": ["content"],
            "additionalProperties": False,
        }
        return {"oneOf": [call_shape, text_shape]}

    def offered(self, messages: Sequence[Message]) -> list[Message]:
        """``messages`` as text turns, with the tools described in the system message."""
        turns = text_turns(messages)
        if not self.active:
            return turns
        section = self._instructions()
        if turns and turns[0].get("role") == "system":
            head = {"role": "system", "content": f"{turns[0]['content']}\n\n{section}"}
            return [head, *turns[1:]]
        return [{"role": "system", "content": section}, *turns]

    def _instructions(self) -> str:
        listing = "\n".join(
            json.dumps(
                {"name": t.name, "description": t.description, "parameters": t.parameters},
                ensure_ascii=False,
            )
            for t in self.tools
        )
        calls = 'answer {"tool_calls": [{"name": ..., "arguments": {...}}]}'
        if self.mode != "auto":
            return f"You can call these tools:\n{listing}\nAlways {calls}."
        return (
            f"You can call these tools:\n{listing}\n"
            'Answer in JSON. Most messages need no tool: reply {"content": "your reply"}. '
            f"Only when the user asks for what a tool does, {calls}."
        )

    def read(self, text: str, validate: bool = True) -> Answer:
        """The constrained output as text or validated calls; anything else stays text.

        Without ``validate``, a call to an offered tool is kept whatever its arguments
        (an agent's loop checks them, and tells the model what was wrong).
        """
        if not self.active:
            return Answer(text)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:  # cut short: keep what the text answer said so far
            content = partial_content(text)
            return Answer(text if content is None else content)
        if not isinstance(value, dict):
            return Answer(text)
        if isinstance(value.get("content"), str) and "tool_calls" not in value:
            return Answer(value["content"])
        by_name = {t.name: t for t in self.tools}
        calls: list[ToolCall] = []
        for item in value.get("tool_calls") or []:
            chosen = by_name.get(str(item.get("name"))) if isinstance(item, dict) else None
            arguments = item.get("arguments") if chosen is not None else None
            if chosen is None or not isinstance(arguments, dict):
                return Answer(text)
            try:
                if validate:
                    jsonschema.validate(arguments, chosen.parameters)
            except jsonschema.ValidationError:
                return Answer(text)
            calls.append(ToolCall(_call_id(), chosen.name, arguments))
        return Answer(None, calls) if calls else Answer(text)


_CONTENT_OPENING = re.compile(r'\s*\{\s*"content"\s*:\s*"')
# A string's tail that may be an escape still being written: held back until complete.
_OPEN_ESCAPE = re.compile(
    r"\\(u[0-9a-fA-F]{0,3}|u[dD][89abAB][0-9a-fA-F]{2}(\\u?[0-9a-fA-F]{0,3})?)?$"
)


def partial_content(text: str) -> str | None:
    """The text answer decoded so far, while ``text`` is ``{"content": "...`` being written.

    None while it is not yet clear that the answer is text (or it is not): the
    streams send this as content as it grows, instead of waiting for the whole JSON.
    """
    opening = _CONTENT_OPENING.match(text)
    if opening is None:
        return None
    body, escaped = text[opening.end() :], False
    for index, char in enumerate(body):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            body = body[:index]
            break
    else:
        body = _OPEN_ESCAPE.sub("", body)
    try:
        decoded: str = json.loads(f'"{body}"')
    except json.JSONDecodeError:
        return None
    return decoded


class TextStream:
    """Feeds constrained output in; gives the text answer's new part, once it is text."""

    def __init__(self, plan: ToolPlan) -> None:
        self.buffer = ""
        self.sent = ""
        self.text_possible = plan.mode == "auto"

    def feed(self, piece: str) -> str:
        self.buffer += piece
        content = partial_content(self.buffer) if self.text_possible else None
        if content is None or not content.startswith(self.sent):
            return ""
        fresh, self.sent = content[len(self.sent) :], content
        return fresh

    def rest(self, answer: Answer) -> Answer:
        """``answer`` less the text already sent."""
        if answer.content is not None and answer.content.startswith(self.sent):
            return Answer(answer.content[len(self.sent) :], answer.calls)
        return answer


def _call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


@dataclass(frozen=True)
class CallPart:
    """A piece of a call as it is written: its start (``id`` and ``name``), or more
    of its arguments' JSON text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


# The constrained shape of calls (``ToolPlan.schema``), read a piece at a time.
_CALLS_OPENING = re.compile(r'\s*\{\s*"tool_calls"\s*:\s*\[\s*')
_CALL_NAME = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_ARGUMENTS_KEY = re.compile(r'\s*,\s*"arguments"\s*:\s*')
_NEXT_CALL = re.compile(r"\s*\}\s*,\s*")


class CallStream:
    """Feeds constrained output in; gives the parts of its calls written since.

    Output that is not calls (a text answer) gives nothing. The arguments come
    as the model writes them, so their pieces join into exactly that JSON.
    """

    def __init__(self) -> None:
        self.buffer = ""
        self.at = 0  # where reading goes on
        self.phase: Literal["opening", "name", "key", "arguments", "next"] = "opening"
        self.index = -1  # of the call being written
        self.depth = 0  # of brackets, in the arguments
        self.in_string = self.escaped = False

    @property
    def started(self) -> bool:
        """Whether a call was begun (its start given out)."""
        return self.index >= 0

    def feed(self, piece: str) -> list[CallPart]:
        self.buffer += piece
        parts: list[CallPart] = []
        while (part := self._step()) is not None:
            if part.id is not None or part.arguments:
                parts.append(part)
        return parts

    def _step(self) -> CallPart | None:
        """Read on through one phase: what it gives (maybe an empty part), or None to
        wait for more output."""
        if self.phase == "arguments":
            return self._arguments()
        pattern = {"opening": _CALLS_OPENING, "name": _CALL_NAME, "key": _ARGUMENTS_KEY,
                   "next": _NEXT_CALL}[self.phase]  # fmt: skip
        found = pattern.match(self.buffer, self.at)
        if found is None:
            return None
        self.at = found.end()
        if self.phase == "name":
            self.index, self.phase = self.index + 1, "key"
            return CallPart(self.index, id=_call_id(), name=json.loads(f'"{found.group(1)}"'))
        self.phase = "arguments" if self.phase == "key" else "name"
        return CallPart(self.index)

    def _arguments(self) -> CallPart | None:
        start = self.at
        for position in range(start, len(self.buffer)):
            char = self.buffer[position]
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:  # the arguments' value is whole
                    self.at, self.phase = position + 1, "next"
                    return CallPart(self.index, arguments=self.buffer[start : self.at])
        self.at = len(self.buffer)
        return None if self.at == start else CallPart(self.index, arguments=self.buffer[start:])


def _call_schema(chosen: Tool) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": chosen.name}, "arguments": chosen.parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def plan(
    tools: Sequence[Tool], choice: ToolMode | str | None, parallel: bool | None = None
) -> ToolPlan:
    """``choice`` is "none", "auto", "required" or a tool's name (that tool alone, required)."""
    if choice is None:
        choice = "auto"
    if choice in ("none", "auto", "required"):
        mode: ToolMode = choice  # type: ignore[assignment]
        return ToolPlan(tuple(tools), mode if tools else "none", parallel is not False)
    named = [t for t in tools if t.name == choice]
    if not named:
        raise InvalidRequest(
            f"tool_choice names '{choice}', which is not among tools", "tool_choice"
        )
    return ToolPlan(tuple(named), "required", parallel is not False)


def text_turns(messages: Sequence[Message]) -> list[Message]:
    """Assistant calls and tool results as plain text turns that any template accepts.

    A message may carry ``tool_calls`` (a list of ``{"name", "arguments"}``) and
    role "tool" with an optional ``name``.
    """
    turns: list[Message] = []
    for message in messages:
        role, content = message.get("role"), message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            calls = [
                {"name": c["name"], "arguments": c["arguments"]} for c in message["tool_calls"]
            ]
            turns.append({"role": "assistant", "content": json.dumps({"tool_calls": calls})})
        elif role == "tool":
            name = message.get("name")
            line = f"Result of tool {name}: {content}" if name else f"Tool result: {content}"
            if turns and turns[-1].get("tool_results"):
                merged = {**turns[-1], "content": f"{turns[-1]['content']}\n{line}"}
                turns[-1] = merged
            else:
                turns.append({"role": "user", "content": line, "tool_results": True})
        else:
            turns.append({"role": role, "content": content})
    return [{k: v for k, v in turn.items() if k != "tool_results"} for turn in turns]
