"""What a run may use: its tools, opened for its definition, and the services they act through.

A run's tools are the built-ins its definition names, plus the tools of the
MCP servers it names (``mcp:server``, or one ``server__tool``), connected
for as long as the run's task lives. The services (knowledge search,
memory) act for the run's owner and nobody else, on the knowledge bases the
definition names, and memory only as far as its ``memory`` access allows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from blackroad.agents.base import Tool, ToolContext
from blackroad.agents.builtin import builtin_tools
from blackroad.agents.definitions import MCP_PREFIX, AgentDefinition, mcp_server_of
from blackroad.agents.journal import Run
from blackroad.agents.mcp import McpServers
from blackroad.agents.sandboxes import Sandboxes
from blackroad.errors import InvalidRequest
from blackroad.memory.facts import Memories
from blackroad.memory.knowledge import KnowledgeBases


class Toolbox:
    def __init__(
        self,
        allowed_hosts: frozenset[str],
        knowledge: KnowledgeBases,
        memories: Memories,
        sandboxes: Sandboxes,
        mcp: McpServers | None = None,
    ) -> None:
        self.builtins = builtin_tools(allowed_hosts)
        self.knowledge = knowledge
        self.memories = memories
        self.sandboxes = sandboxes
        self.mcp = mcp

    def check(self, definition: AgentDefinition) -> None:
        """Refuse a definition naming a tool that is neither built in nor an MCP server's."""
        for name in definition.tools:
            if name in self.builtins:
                continue
            server = mcp_server_of(name)
            if server is None:
                known = ", ".join(sorted(self.builtins))
                raise InvalidRequest(f"unknown tool '{name}' (built in: {known})", param="tools")
            if self.mcp is None:
                raise InvalidRequest(f"'{name}' is an MCP tool, and MCP is not set up", "tools")
            if server not in {s.name for s in self.mcp.list()}:
                raise InvalidRequest(f"'{name}': no MCP server named '{server}'", param="tools")

    @asynccontextmanager
    async def open(self, definition: AgentDefinition) -> AsyncIterator[dict[str, Tool]]:
        """The definition's tools, in its order; MCP servers connected until the exit."""
        servers = sorted({s for n in definition.tools if (s := mcp_server_of(n)) is not None})
        if not servers or self.mcp is None:
            yield {n: self.builtins[n] for n in definition.tools if n in self.builtins}
            return
        async with self.mcp.connect(servers) as remote:
            tools: dict[str, Tool] = {}
            for name in definition.tools:
                if name in self.builtins:
                    tools[name] = self.builtins[name]
                elif name.startswith(MCP_PREFIX):
                    prefix = f"{name[len(MCP_PREFIX) :]}__"
                    tools.update((n, t) for n, t in remote.items() if n.startswith(prefix))
                elif name in remote:
                    tools[name] = remote[name]
            yield tools

    def context_for(self, run: Run) -> ToolContext:
        """The services the run's tools act through, as its owner."""
        definition, owner = run.definition, run.owner

        async def search(query: str, limit: int) -> list[dict[str, Any]]:
            refs: list[int | str] = list(definition.knowledge_bases) or [
                base.id for base in self.knowledge.visible(owner)
            ]
            hits = await self.knowledge.search(owner, refs, query, limit)
            # "kb": whose passage it is, so a viewer of the run who may not read it never does.
            return [
                {"kb": hit.kb_id, "document": hit.document_name, "page": hit.page,
                 "start": hit.char_start, "end": hit.char_end, "text": hit.text,
                 "score": hit.score}
                for hit in hits
            ]  # fmt: skip

        async def recall(query: str, limit: int) -> list[dict[str, Any]]:
            return [m.as_dict() for m in await self.memories.recall(owner, query, limit)]

        async def remember(content: str) -> dict[str, Any]:
            return (await self.memories.add(owner, content)).as_dict()

        return ToolContext(
            user=owner,
            agent=definition.name,
            sandbox=self.sandboxes.open(run.sandbox),
            knowledge_search=search,
            memory_read=None if definition.memory == "none" else recall,
            memory_write=remember if definition.memory == "write" else None,
        )
