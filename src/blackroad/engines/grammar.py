"""JSON schemas to llama.cpp grammars, within bounds.

A JSON schema (OpenAI's ``response_format``, Ollama's ``format``, tools'
parameters) constrains a generation through a GBNF grammar: llama-cpp-python's
converter writes it, llama.cpp parses it for each generation. Both grow with
what the schema states: the converter writes ``minLength: N`` as N rule
references and ``maxLength: N`` as N nested optionals (one request with a huge
``minLength`` once grew the server to 15.5 GB), a quantifier in a ``pattern``
the same way, and an object's optional properties cost it quadratic time.

- ``check_schema`` refuses, before anything is built, a schema past the limits
  below, naming the request field and the keyword and where it is (400);
- ``compile_grammar`` converts a schema in a helper process
  (``blackroad.bounded``: ``Bounds.grammar_seconds``, the helper's memory),
  refuses a grammar over ``MAX_GRAMMAR_BYTES`` or ``MAX_GRAMMAR_GROUPS``, and
  has llama.cpp parse it once there, so the parse on a model's worker thread,
  for each generation that uses it, is of a grammar known to be valid and
  cheap. That parse costs about 7 µs per group (each nested optional of a
  ``maxLength`` is one) and far less per byte of literal: at the limits, some
  30 ms (``bench/bounded.py``). Grammars are cached by schema.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any

from blackroad import bounded
from blackroad.errors import InvalidRequest

# The serialized schema; tools' schemas together.
MAX_SCHEMA_BYTES = 256 * 1024
# Objects and arrays inside one another, counted in the JSON document.
MAX_SCHEMA_DEPTH = 64
# Repetition counts: each unit becomes a rule reference or a nesting level.
# llama.cpp itself refuses a grammar that nests an optional more than ~1,000 deep.
MAX_REPEAT = 1000
MAX_PATTERN_LENGTH = 1000
# Alternatives of one enum, anyOf, oneOf, allOf, prefixItems or type list.
MAX_ALTERNATIVES = 1000
# Properties of one object: the converter's time grows with their square.
MAX_PROPERTIES = 256
MAX_GRAMMAR_BYTES = 256 * 1024
# Parenthesized groups in the grammar: llama.cpp makes each a rule, and its parse
# time (on the model's worker thread, for every generation) grows with them.
MAX_GRAMMAR_GROUPS = 4096

_REPEATS = (
    "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
    "minContains", "maxContains",
)  # fmt: skip
# Each unit between these is one nested optional group of the grammar.
_RANGES = (("minLength", "maxLength"), ("minItems", "maxItems"))
_ALTERNATIVES = ("enum", "anyOf", "oneOf", "allOf", "prefixItems", "type")
_QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")
# A GBNF string literal or character class, whose parentheses are characters.
_LITERAL = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]')
_CACHE_SIZE = 128
_grammars: OrderedDict[str, str] = OrderedDict()


def _where(path: list[str]) -> str:
    return "/" + "/".join(path) if path else "the schema's root"


def check_size(schema: Any, param: str) -> None:
    """Refuse a schema document over ``MAX_SCHEMA_BYTES`` (tools' schemas together)."""
    size = len(json.dumps(schema, ensure_ascii=False).encode())
    if size > MAX_SCHEMA_BYTES:
        raise InvalidRequest(
            f"JSON schema: {size} bytes; at most {MAX_SCHEMA_BYTES} are allowed", param
        )


def check_schema(schema: Any, param: str) -> None:
    """Refuse a schema whose grammar would be too large to build or use, naming what and where."""
    check_size(schema, param)

    def refuse(path: list[str], what: str) -> InvalidRequest:
        return InvalidRequest(f"JSON schema: {what} (at {_where(path)})", param)

    optional = 0  # the grammar's nested groups, as far as the document shows them

    def visit(node: Any, path: list[str]) -> None:
        nonlocal optional
        if len(path) > MAX_SCHEMA_DEPTH:
            raise refuse(path, f"nests deeper than {MAX_SCHEMA_DEPTH} levels")
        if isinstance(node, list):
            for index, item in enumerate(node):
                visit(item, [*path, str(index)])
            return
        if not isinstance(node, dict):
            return
        for keyword in _REPEATS:
            count = node.get(keyword)
            if isinstance(count, int | float) and count > MAX_REPEAT:  # bool is never > 1000
                raise refuse(path, f'"{keyword}" is {count:g}; at most {MAX_REPEAT} is allowed')
        for least, most in _RANGES:
            high, low = node.get(most), node.get(least, 0)
            if isinstance(high, int) and isinstance(low, int) and high > low:
                optional += high - low
        for keyword in _ALTERNATIVES:
            options = node.get(keyword)
            if isinstance(options, list) and len(options) > MAX_ALTERNATIVES:
                raise refuse(
                    path, f'"{keyword}" has {len(options)} entries; at most {MAX_ALTERNATIVES}'
                )
        properties = node.get("properties")
        if isinstance(properties, dict) and len(properties) > MAX_PROPERTIES:
            raise refuse(
                path, f'"properties" has {len(properties)} entries; at most {MAX_PROPERTIES}'
            )
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            optional += _check_pattern(pattern, path, refuse)
        reference = node.get("$ref")
        if isinstance(reference, str) and not reference.startswith("#"):
            raise refuse(
                path, f'"$ref" is {reference[:100]!r}; only references within it are allowed'
            )
        for key, value in node.items():
            visit(value, [*path, str(key)])

    visit(schema, [])
    if optional > MAX_GRAMMAR_GROUPS:
        raise refuse([], f"its maxLength, maxItems and pattern repetitions add up to {optional} "
                         f"optional parts; at most {MAX_GRAMMAR_GROUPS} are allowed")  # fmt: skip


def _check_pattern(pattern: str, path: list[str], refuse: Any) -> int:
    """Refuse a pattern too long or repeating too often; its optional repetitions."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise refuse(path, f'"pattern" is {len(pattern)} characters; at most {MAX_PATTERN_LENGTH}')
    optional = 0
    for match in _QUANTIFIER.finditer(pattern):
        least, most = (int(number) if number else None for number in match.groups())
        if max(least or 0, most or 0) > MAX_REPEAT:
            raise refuse(
                path, f'"pattern" repeats {match[0]}; at most {MAX_REPEAT} repetitions are allowed'
            )
        if most is not None:
            optional += most - (least or 0)
    return optional


async def compile_grammar(schema: Any, param: str = "response_format") -> Any:
    """A llama.cpp grammar for JSON output: any JSON for ``{}``, else the schema's."""
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    if not schema:
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    # The API checked each schema it was sent (``check_schema``) where it could
    # name the field; past the size, the helper's bounds hold for the rest.
    check_size(schema, param)
    key = json.dumps(schema, sort_keys=True)
    text = _grammars.get(key)
    if text is None:
        work = bounded.pool()
        text = await work.run(
            GRAMMAR_TASK,
            {"schema": schema, "param": param},
            seconds=work.bounds.grammar_seconds,
            output_bytes=MAX_GRAMMAR_BYTES,
            what="turning the JSON schema into a grammar",
            param=param,
        )
        _grammars[key] = text
        while len(_grammars) > _CACHE_SIZE:
            _grammars.popitem(last=False)
    else:
        _grammars.move_to_end(key)
    return LlamaGrammar.from_string(text, verbose=False)


GRAMMAR_TASK = f"{__name__}:grammar_task"


def grammar_task(args: dict[str, Any], _: bytes) -> str:
    """A helper's side: the schema's GBNF, converted and parsed once by llama.cpp."""
    import llama_cpp
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    param = args["param"]
    try:
        text: str = json_schema_to_gbnf(json.dumps(args["schema"]))
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # the converter raises assorted errors on unsupported schemas
        raise InvalidRequest(f"unsupported JSON schema: {exc}", param) from exc
    if len(text) > MAX_GRAMMAR_BYTES:
        raise InvalidRequest(
            f"JSON schema: its grammar would be {len(text)} bytes; at most {MAX_GRAMMAR_BYTES} "
            "are allowed",
            param,
        )
    groups = _LITERAL.sub("", text).count("(")
    if groups > MAX_GRAMMAR_GROUPS:
        raise InvalidRequest(
            f"JSON schema: its grammar would have {groups} nested groups; at most "
            f"{MAX_GRAMMAR_GROUPS} are allowed (each unit of a maxLength or maxItems, or of a "
            "pattern's {m,n}, is one)",
            param,
        )
    # No vocabulary is needed to parse a grammar of characters, which is all
    # the converter writes.
    sampler = llama_cpp.llama_sampler_init_grammar(None, text.encode(), b"root")
    if not sampler:
        raise InvalidRequest("llama.cpp cannot parse the grammar of this JSON schema", param)
    llama_cpp.llama_sampler_free(sampler)
    return text
