"""Agent definitions: what an agent is, the rules it must satisfy, and where they are kept.

An agent belongs to the user who made it (its ``owner``) and is seen by no
one else: another user's agent is answered as one that does not exist
(404). Its id and its sandbox directory are its own forever: ids are never
handed out twice (``AUTOINCREMENT`` on SQLite, a sequence on PostgreSQL), a
sandbox is named at random and goes with its agent (``agents/sandboxes.py``).

Tools are named as the model sees them: a built-in's name, an MCP server's
tool as ``server__tool``, or every tool of an MCP server as ``mcp:server``.
The approval policy can only add caution: a tool with side effects, or one
that sends its arguments off the machine (``Tool.needs_approval``), always
waits for a human (``ask``) unless the policy forbids it outright
(``deny``); any tool may be set to ``ask`` or ``deny``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from sqlalchemy import RowMapping, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from blackroad.agents.sandboxes import Sandboxes, new_name
from blackroad.errors import InvalidRequest, NotFound
from blackroad.memory.conversations import utc_now
from blackroad.store.database import Database
from blackroad.store.schema import agents

MemoryAccess = Literal["none", "read", "write"]
Policy = Literal["ask", "deny"]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MCP_PREFIX = "mcp:"
MAX_STEPS_LIMIT = 100
DEFAULT_MAX_STEPS = 8


def mcp_server_of(name: str) -> str | None:
    """The MCP server a tool name refers to, if it is one of theirs."""
    if name.startswith(MCP_PREFIX):
        return name[len(MCP_PREFIX) :]
    return name.split("__", 1)[0] if "__" in name else None


@dataclass(frozen=True)
class AgentDefinition:
    """An agent as its owner describes it; stored as JSON, snapshotted by each run."""

    name: str
    model: str
    system: str = ""
    tools: tuple[str, ...] = ()
    knowledge_bases: tuple[int, ...] = ()
    memory: MemoryAccess = "none"
    max_steps: int = DEFAULT_MAX_STEPS
    approval: Mapping[str, Policy] = field(default_factory=dict)
    # The tool choice of the first steps, in order ("auto", "required", "none" or a
    # tool's name); every later step is "auto". Lets an agent always look up first.
    tool_choice: tuple[str, ...] = ()
    max_tokens: int = 512
    temperature: float = 0.2
    # Ollama's default: without it a small model at a low temperature loops.
    repeat_penalty: float = 1.1

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise InvalidRequest(
                "an agent's name is 1-64 letters, digits, '_', '.' or '-'", param="name"
            )
        if not 1 <= self.max_steps <= MAX_STEPS_LIMIT:
            raise InvalidRequest(f"max_steps is 1 to {MAX_STEPS_LIMIT}", param="max_steps")
        if len(set(self.tools)) != len(self.tools):
            raise InvalidRequest("a tool is named twice", param="tools")
        for tool, policy in self.approval.items():
            if not self.offers(tool):
                raise InvalidRequest(f"approval names '{tool}', not among tools", "approval")
            if policy not in get_args(Policy):
                raise InvalidRequest(f"a tool's policy is one of {get_args(Policy)}", "approval")
        for choice in self.tool_choice:
            if choice not in ("auto", "required", "none") and not self.offers(choice):
                raise InvalidRequest(
                    f"tool_choice names '{choice}', not among tools", "tool_choice"
                )

    def offers(self, tool: str) -> bool:
        """Is ``tool`` among the tools, itself or as one of a named MCP server's?"""
        server = mcp_server_of(tool)
        return tool in self.tools or (server is not None and f"{MCP_PREFIX}{server}" in self.tools)

    def policy(self, tool: str, needs_approval: bool) -> Literal["allow", "ask", "deny"]:
        """What happens when the model calls ``tool``: run it, ask a human, or refuse."""
        server = mcp_server_of(tool)
        chosen = self.approval.get(tool) or (
            self.approval.get(f"{MCP_PREFIX}{server}") if server else None
        )
        if chosen == "deny":
            return "deny"
        return "ask" if needs_approval or chosen == "ask" else "allow"

    def choice_at(self, step: int) -> str:
        return self.tool_choice[step] if step < len(self.tool_choice) else "auto"

    def to_json(self) -> dict[str, Any]:
        value = asdict(self)
        return {**value, "approval": dict(self.approval)}

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> AgentDefinition:
        try:
            return cls(
                **{
                    **value,
                    "tools": tuple(value.get("tools", ())),
                    "knowledge_bases": tuple(value.get("knowledge_bases", ())),
                    "tool_choice": tuple(value.get("tool_choice", ())),
                    "approval": dict(value.get("approval", {})),
                }
            )
        except TypeError as error:  # a stored definition from a newer version, say
            raise InvalidRequest(f"not an agent definition: {error}") from error


@dataclass(frozen=True)
class Agent:
    id: int
    owner: str
    definition: AgentDefinition
    created_at: str
    updated_at: str
    sandbox: str  # its directory's name under the sandboxes' root

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            **self.definition.to_json(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def _agent(row: RowMapping) -> Agent:
    definition = AgentDefinition.of(row["definition"])
    return Agent(
        row["id"], row["owner"], definition, row["created_at"], row["updated_at"], row["sandbox"]
    )


_a = agents.c


class Agents:
    """Each user's agent definitions, and their sandboxes (Core statements, either database)."""

    def __init__(self, database: Database, sandboxes: Sandboxes) -> None:
        self.database = database
        self.sandboxes = sandboxes

    def list(self, owner: str) -> list[Agent]:
        with self.database.engine.connect() as connection:
            rows = connection.execute(select(agents).where(_a.owner == owner).order_by(_a.name))
            return [_agent(row) for row in rows.mappings()]

    def get(self, owner: str, agent_id: int) -> Agent:
        with self.database.engine.connect() as connection:
            found = select(agents).where(_a.id == agent_id, _a.owner == owner)
            row = connection.execute(found).mappings().first()
        if row is None:
            raise NotFound(f"agent {agent_id} not found")
        return _agent(row)

    def create(self, owner: str, definition: AgentDefinition) -> Agent:
        now = utc_now()
        row = {
            "owner": owner, "name": definition.name, "definition": definition.to_json(),
            "created_at": now, "updated_at": now, "sandbox": new_name(),
        }  # fmt: skip
        with _name_taken(definition.name), self.database.engine.begin() as connection:
            agent_id: int = connection.execute(insert(agents).returning(_a.id), row).scalar_one()
        return self.get(owner, agent_id)

    def update(self, owner: str, agent_id: int, definition: AgentDefinition) -> Agent:
        self.get(owner, agent_id)
        change = (
            update(agents)
            .where(_a.id == agent_id)
            .values(name=definition.name, definition=definition.to_json(), updated_at=utc_now())
        )
        with _name_taken(definition.name), self.database.engine.begin() as connection:
            connection.execute(change)
        return self.get(owner, agent_id)

    def delete(self, owner: str, agent_id: int) -> None:
        """Delete the agent, its runs (by cascade) and its sandbox's files."""
        agent = self.get(owner, agent_id)
        with self.database.engine.begin() as connection:
            connection.execute(delete(agents).where(_a.id == agent_id))
        self.sandboxes.remove(agent.sandbox)

    def sweep_sandboxes(self) -> int:
        """Remove the sandboxes no agent names (left by a failed removal or a crash)."""
        with self.database.engine.connect() as connection:
            named = set(connection.scalars(select(_a.sandbox)))
        return self.sandboxes.sweep(named)


@contextmanager
def _name_taken(name: str) -> Iterator[None]:
    """The owner's other agent has ``name`` already: the unique (owner, name) refused it,
    on either database, however many control planes wrote at once."""
    try:
        yield
    except IntegrityError:
        raise InvalidRequest(f"you already have an agent named '{name}'", param="name") from None
