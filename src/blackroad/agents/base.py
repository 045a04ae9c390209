"""The tool contract: what a tool is, what it is given, what it returns.

A tool subclasses ``Tool`` and implements one method, ``run``. The run loop
calls tools only through ``validated_call``, which checks the arguments against
the tool's JSON Schema first, so ``run`` may trust their shape.

A tool's output is DATA. The run loop must never let a result change the
agent's tools, permissions or approval policy: results are passed to the model
as role "tool" content only. A tool with ``side_effects``, or one whose
arguments leave this machine (``outbound``), pauses a run for a human's
approval before it is called.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jsonschema

from blackroad.errors import InvalidRequest


class ToolError(InvalidRequest):
    """A tool was called with arguments it cannot use; the model may retry."""

    code = "tool_error"


class KnowledgeSearch(Protocol):
    async def __call__(self, query: str, limit: int) -> list[dict[str, Any]]: ...


class MemoryRead(Protocol):
    async def __call__(self, query: str, limit: int) -> list[dict[str, Any]]: ...


class MemoryWrite(Protocol):
    async def __call__(self, content: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ToolContext:
    """Who a tool runs for, and the services it may use on their behalf."""

    user: str
    agent: str
    sandbox: Path
    knowledge_search: KnowledgeSearch | None = None
    memory_read: MemoryRead | None = None
    memory_write: MemoryWrite | None = None


@dataclass(frozen=True)
class ToolResult:
    """``content`` is what the model reads; ``data`` is the same, structured."""

    content: str
    data: dict[str, Any] = field(default_factory=dict)
    is_error: bool = False


def object_schema(properties: dict[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON Schema of an object with ``properties`` and no others."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return {**schema, "additionalProperties": False}


class Tool(ABC):
    """One capability a model may call by ``name`` with arguments matching ``parameters``."""

    # Class attributes for built-ins; set per instance by tools found at run time (MCP).
    name: str
    description: str
    parameters: dict[str, Any]
    side_effects: bool = False
    # Its arguments are sent off this machine (a URL): whatever the model read (memories,
    # passages, files, text a prompt injection planted) could ride along, to any path or
    # query on an allowed host. A person sees the exact call before it goes.
    outbound: bool = False

    @property
    def needs_approval(self) -> bool:
        """Whether a run waits for a person before calling it (unless its policy denies it)."""
        return self.side_effects or self.outbound

    @abstractmethod
    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        """Do the work; raise ``ToolError`` for arguments that cannot be used."""


async def validated_call(tool: Tool, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    """Run ``tool`` after checking ``arguments`` against its schema."""
    try:
        jsonschema.validate(arguments, tool.parameters)
    except jsonschema.ValidationError as error:
        where = ".".join(str(part) for part in error.absolute_path) or None
        raise ToolError(f"Invalid arguments for {tool.name}: {error.message}", where) from None
    return await tool.run(arguments, context)
