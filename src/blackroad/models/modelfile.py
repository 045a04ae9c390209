"""Parsing Ollama's Modelfile: FROM, PARAMETER, TEMPLATE, SYSTEM, MESSAGE, LICENSE.

ADAPTER (LoRA) is refused with a clear error rather than ignored. Values may
be quoted with ``"``, or span lines with ``\"\"\"``. TEMPLATE is a Jinja chat
template here (BlackRoad renders templates as llama.cpp does), not a Go one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from blackroad.errors import InvalidRequest

_COMMANDS = {"FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "MESSAGE", "LICENSE", "ADAPTER"}
_ROLES = {"system", "user", "assistant"}
# A command, a parameter's name or a role, and what follows its one separator:
# any whitespace separates, as str.split and str.strip see it (\t, \x1f too).
_WORD = re.compile(r"(\S*)\s?(.*)", re.DOTALL)
# PARAMETER names and how their values are read; stop may repeat.
_PARAMETER_TYPES: dict[str, type] = {
    "num_predict": int,
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "repeat_penalty": float,
    "presence_penalty": float,
    "frequency_penalty": float,
    "seed": int,
    "stop": str,
    "num_ctx": int,
    "num_thread": int,
}


@dataclass
class Modelfile:
    base: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    license: list[str] = field(default_factory=list)


def parameter_value(name: str, raw: Any) -> Any:
    """A PARAMETER value converted to its type; unknown names are an error."""
    kind = _PARAMETER_TYPES.get(name)
    if kind is None:
        raise InvalidRequest(f"unknown parameter {name!r}", param="parameters")
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise InvalidRequest(
            f"parameter {name} must be {kind.__name__}, got {raw!r}", param="parameters"
        ) from None


def _first_word(text: str) -> tuple[str, str]:
    match = _WORD.match(text)
    assert match is not None  # both groups match the empty string
    return match[1], match[2]


def _statements(text: str) -> list[tuple[int, str, str, bool]]:
    """(line number, COMMAND, argument text, was it triple-quoted) per statement."""
    lines = text.splitlines()
    statements: list[tuple[int, str, str, bool]] = []
    index = 0
    while index < len(lines):
        # Not stripped at its end: spaces there may open a triple-quoted value.
        number, line = index + 1, lines[index].lstrip()
        index += 1
        if not line.strip() or line.startswith("#"):
            continue
        command, rest = _first_word(line)
        command, rest = command.upper(), rest.lstrip()
        if command not in _COMMANDS:
            raise InvalidRequest(f"Modelfile line {number}: unknown command {command!r}")
        head, quote, after = rest.partition('"""')
        if quote:
            # Each line is searched once for the closing quotes (searching the
            # whole body again per line took minutes for a long unterminated one).
            body, (last, closed, _) = [], after.partition('"""')
            while not closed:
                if index >= len(lines):
                    raise InvalidRequest(f'Modelfile line {number}: unterminated """')
                body.append(last)
                last, closed, _ = lines[index].partition('"""')
                index += 1
            rest = head + "\n".join([*body, last])
        statements.append((number, command, rest, bool(quote)))
    return statements


def _unquote(value: str, number: int) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            text = str(json.loads(value))
            text.encode()  # a lone surrogate ("\\ud800") is no text
            return text
        except ValueError:  # UnicodeEncodeError and json's JSONDecodeError are ValueErrors
            raise InvalidRequest(
                f"Modelfile line {number}: {value[:40]} is not one quoted string"
            ) from None
    return value


def parse(text: str) -> Modelfile:
    try:
        text.encode()  # the API refuses lone surrogates; other callers may not
    except UnicodeEncodeError as error:
        raise InvalidRequest(f"a Modelfile is text, not {text[error.start]!r}") from None
    result = Modelfile()
    for number, command, rest, triple in _statements(text):

        def value(raw: str, triple: bool = triple, number: int = number) -> str:
            return raw if triple else _unquote(raw, number)

        if command == "ADAPTER":
            raise InvalidRequest(
                f"Modelfile line {number}: ADAPTER is not supported; merge the adapter into "
                "the GGUF (llama.cpp's export-lora) and use FROM"
            )
        if command == "FROM":
            result.base = value(rest)
        elif command == "PARAMETER":
            name, raw_value = _first_word(rest)
            converted = parameter_value(name, value(raw_value))
            if name == "stop":
                result.parameters.setdefault("stop", []).append(converted)
            else:
                result.parameters[name] = converted
        elif command == "MESSAGE":
            role, content = _first_word(rest)
            if role.lower() not in _ROLES:
                raise InvalidRequest(
                    f"Modelfile line {number}: MESSAGE role must be one of "
                    f"{', '.join(sorted(_ROLES))}"
                )
            result.messages.append({"role": role.lower(), "content": value(content)})
        elif command == "TEMPLATE":
            result.template = value(rest)
        elif command == "SYSTEM":
            result.system = value(rest)
        else:
            result.license.append(value(rest))
    if result.base is None:
        raise InvalidRequest("a Modelfile needs a FROM line")
    return result


# Line breaks other than "\n": str.splitlines cuts a triple-quoted value at them too.
_OTHER_BREAKS = frozenset("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _quoted(value: str) -> str:
    """``value`` quoted so that ``parse`` reads it back unchanged.

    In triple quotes, as Ollama writes them, unless it holds the closing quotes,
    ends with a quote or holds a line break that is not ``\\n``: then as one JSON string.
    """
    if '"""' in value or value.endswith('"') or not _OTHER_BREAKS.isdisjoint(value):
        return json.dumps(value)
    return f'"""{value}"""'


def render(model: Modelfile) -> str:
    """A Modelfile for ``model``, as /api/show returns it; ``parse`` reads it back."""
    base = model.base or ""
    plain = base == base.strip() and len(base.splitlines()) <= 1 and '"' not in base
    lines = [f"FROM {base if plain else _quoted(base)}"]
    if model.template:
        lines.append(f"TEMPLATE {_quoted(model.template)}")
    if model.system:
        lines.append(f"SYSTEM {_quoted(model.system)}")
    for name, value in model.parameters.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"PARAMETER {name} {json.dumps(item) if name == 'stop' else item}")
    lines += [f"MESSAGE {m['role']} {_quoted(m['content'])}" for m in model.messages]
    lines += [f"LICENSE {_quoted(text)}" for text in model.license]
    return "\n".join(lines) + "\n"
