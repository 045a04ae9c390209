"""The journal of agent runs: each run and its steps, written before the next step begins.

Every write here is one transaction that also appends the step's audit
record (``agent.*`` kinds), so a step and its audit record exist together or
not at all, and a kill -9 leaves the run exactly at its last committed step.
The run loop (``agents/runner.py``) reads a run back from here to go on
after a restart.

A tool step is written ``started`` before the tool runs and ``completed``
with its result after, so a restart can tell a call that finished (its
recorded result is used, it never runs again) from one the crash cut short.

Someone other than a run's owner (an administrator) sees its steps through
``shown_to``: the calls and what came of them, but no knowledge passage from
a base they may not read themselves, since being an administrator gives no
access to other people's knowledge bases.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from blackroad.agents.definitions import Agent, AgentDefinition
from blackroad.audit.log import AuditLog, Entry
from blackroad.errors import NotFound
from blackroad.memory.conversations import utc_now
from blackroad.store import sqlite
from blackroad.store.database import Database, raw_connection
from blackroad.store.schema import RequestRecord

RunStatus = Literal[
    "running", "awaiting_approval", "succeeded", "failed", "cancelled", "step_limit"
]
StepKind = Literal["model", "tool"]
StepStatus = Literal["started", "completed", "awaiting_approval", "approved", "rejected"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "step_limit"})


@dataclass(frozen=True)
class Run:
    id: int
    agent_id: int
    owner: str
    definition: AgentDefinition
    input: str
    status: RunStatus
    answer: str | None
    error: str | None
    created_at: str
    updated_at: str
    sandbox: str  # its agent's (``agents/sandboxes.py``)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent_id": self.agent_id,
            "agent": self.definition.name,
            "owner": self.owner,
            "input": self.input,
            "status": self.status,
            "answer": self.answer,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class Step:
    id: int
    run_id: int
    seq: int
    kind: StepKind
    status: StepStatus
    name: str  # the model, or the tool
    call_id: str | None
    input: Any  # a tool's arguments; the names of the tools a model was offered
    output: Any  # a model's {"content", "calls"}; a tool's {"content", "data", "is_error"}
    decided_by: str | None
    reason: str | None
    duration_ms: float | None
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _run(row: sqlite.Row) -> Run:
    definition = AgentDefinition.of(json.loads(row["definition"]))
    return Run(
        row["id"], row["agent_id"], row["owner"], definition, row["input"], row["status"],
        row["answer"], row["error"], row["created_at"], row["updated_at"], row["sandbox"],
    )  # fmt: skip


def _step(row: sqlite.Row) -> Step:
    def loaded(text: str | None) -> Any:
        return None if text is None else json.loads(text)

    return Step(
        row["id"], row["run_id"], row["seq"], row["kind"], row["status"], row["name"],
        row["call_id"], loaded(row["input"]), loaded(row["output"]), row["decided_by"],
        row["reason"], row["duration_ms"], row["created_at"], row["updated_at"],
    )  # fmt: skip


# A run with its agent's sandbox (a run goes with its agent, so there is always one).
_RUN = "SELECT r.*, a.sandbox FROM agent_runs r JOIN agents a ON a.id = r.agent_id"


def shown_to(step: dict[str, Any], readable: Container[int]) -> dict[str, Any]:
    """A step (``Step.to_json``) as one sees it who may read only the knowledge bases ``readable``.

    A ``knowledge_search`` result keeps the passages of those bases; the others
    are left out, their number said. A passage recorded before results named
    their base counts as unreadable.
    """
    output = step.get("output")
    if step["name"] != "knowledge_search" or not isinstance(output, dict):
        return step
    hits = output.get("data", {}).get("hits", [])
    kept = [hit for hit in hits if hit.get("kb") in readable]
    withheld = len(hits) - len(kept)
    if not withheld:
        return step
    note = f"[{withheld} passage(s) from knowledge bases you may not read are left out]"
    content = "\n\n".join([*(str(hit.get("text")) for hit in kept), note])
    data = {**output["data"], "hits": kept, "withheld": withheld}
    return {**step, "output": {**output, "content": content, "data": data}}


def audit_entry(kind: str, facts: Mapping[str, Any], sent: Any = None, got: Any = None) -> Entry:
    """An ``agent.*`` audit record; what went in and came out is digested (and kept by policy)."""
    texts = [None if v is None else json.dumps(v, ensure_ascii=False) for v in (sent, got)]
    digests = [None if t is None else hashlib.sha256(t.encode()).hexdigest() for t in texts]
    return Entry(f"agent.{kind}", facts, digests[0], digests[1], texts[0], texts[1])


class Journal:
    def __init__(self, database: Database, audit: AuditLog) -> None:
        self.database = database
        self.audit = audit

    # -- reads ---------------------------------------------------------------

    def run(self, run_id: int) -> Run:
        row = self.database.reader().execute(f"{_RUN} WHERE r.id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(f"run {run_id} not found")
        return _run(row)

    def runs(
        self,
        owner: str | None,
        agent_id: int | None = None,
        statuses: Collection[str] = (),
        limit: int = 100,
    ) -> builtins.list[Run]:
        """Newest first; ``owner`` None: everyone's (what an admin sees)."""
        where: list[str] = ["1 = 1"]
        values: list[str | int] = []
        if owner is not None:
            where.append("r.owner = ?")
            values.append(owner)
        if agent_id is not None:
            where.append("r.agent_id = ?")
            values.append(agent_id)
        if statuses:
            where.append(f"r.status IN ({', '.join('?' * len(statuses))})")
            values.extend(statuses)
        query = f"{_RUN} WHERE {' AND '.join(where)} ORDER BY r.id DESC LIMIT ?"
        return [_run(row) for row in self.database.reader().execute(query, (*values, limit))]

    def steps(self, run_id: int) -> builtins.list[Step]:
        rows = self.database.reader().execute(
            "SELECT * FROM agent_steps WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        return [_step(row) for row in rows]

    def step(self, run_id: int, step_id: int) -> Step:
        row = (
            self.database.reader()
            .execute("SELECT * FROM agent_steps WHERE run_id = ? AND id = ?", (run_id, step_id))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"step {step_id} of run {run_id} not found")
        return _step(row)

    # -- writes --------------------------------------------------------------

    def start(self, agent: Agent, text: str) -> Run:
        """A new run of ``agent`` on ``text``, with the agent's definition as it is now."""
        now = utc_now()

        def work(connection: sqlite.Connection) -> int:
            cursor = connection.execute(
                "INSERT INTO agent_runs (agent_id, owner, definition, input, status,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, 'running', ?, ?)",
                (agent.id, agent.owner, json.dumps(agent.definition.to_json()), text, now, now),
            )
            run_id = int(cursor.lastrowid or 0)
            facts = {"run": run_id, "agent": agent.definition.name, "user": agent.owner}
            sent = {"definition": agent.definition.to_json(), "input": text}
            self.audit.append_to(connection, audit_entry("run", facts, sent))
            return run_id

        return self.run(self.database.write(work))

    def add_step(
        self,
        run: Run,
        kind: StepKind,
        status: StepStatus,
        name: str,
        *,
        call_id: str | None = None,
        sent: Any = None,
        output: Any = None,
        duration_ms: float | None = None,
        audit: Entry | None = None,
        usage: RequestRecord | None = None,
    ) -> Step:
        """A new step; ``usage``, a model call's, goes into the request log with it."""
        now = utc_now()

        def work(connection: sqlite.Connection) -> None:
            (seq,) = connection.execute(
                "SELECT coalesce(max(seq), 0) + 1 FROM agent_steps WHERE run_id = ?", (run.id,)
            ).fetchone()
            cursor = connection.execute(
                "INSERT INTO agent_steps (run_id, seq, kind, status, name, call_id, input,"
                " output, duration_ms, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run.id, seq, kind, status, name, call_id, _json(sent), _json(output),
                 duration_ms, now, now),
            )  # fmt: skip
            self._touch(connection, run.id, now)
            if audit is not None:
                self.audit.append_to(connection, audit)
            added.append(int(cursor.lastrowid or 0))

        added: list[int] = []
        if usage is None:
            self.database.write(work)
        else:  # in the request log too: the owner's usage, budgets and costs count it
            self.database.record_request(usage, also=lambda tx: work(raw_connection(tx)))
        return self.step(run.id, added[0])

    def update_step(
        self,
        step: Step,
        status: StepStatus,
        *,
        output: Any = None,
        duration_ms: float | None = None,
        decided_by: str | None = None,
        reason: str | None = None,
        audit: Entry | None = None,
        expect: StepStatus | None = None,
    ) -> Step | None:
        """The step moved to ``status``; None if it was no longer ``expect`` (another won)."""
        now = utc_now()

        def work(connection: sqlite.Connection) -> bool:
            cursor = connection.execute(
                "UPDATE agent_steps SET status = ?, output = coalesce(?, output),"
                " duration_ms = coalesce(?, duration_ms), decided_by = coalesce(?, decided_by),"
                " reason = coalesce(?, reason), updated_at = ? WHERE id = ? AND status = ?",
                (status, _json(output), duration_ms, decided_by, reason, now, step.id,
                 expect or step.status),
            )  # fmt: skip
            if cursor.rowcount == 0:
                return False
            self._touch(connection, step.run_id, now)
            if audit is not None:
                self.audit.append_to(connection, audit)
            return True

        return self.step(step.run_id, step.id) if self.database.write(work) else None

    def set_status(
        self,
        run: Run,
        status: RunStatus,
        *,
        answer: str | None = None,
        error: str | None = None,
        audit: Entry | None = None,
    ) -> Run | None:
        """The run moved to ``status``, unless it has finished already (None then)."""
        now = utc_now()
        finished = ", ".join(f"'{name}'" for name in sorted(FINISHED))

        def work(connection: sqlite.Connection) -> bool:
            cursor = connection.execute(
                "UPDATE agent_runs SET status = ?, answer = coalesce(?, answer),"  # noqa: S608 (constants)
                " error = coalesce(?, error), updated_at = ?"
                f" WHERE id = ? AND status NOT IN ({finished})",
                (status, answer, error, now, run.id),
            )
            if cursor.rowcount and audit is not None:
                self.audit.append_to(connection, audit)
            return cursor.rowcount > 0

        return self.run(run.id) if self.database.write(work) else None

    @staticmethod
    def _touch(connection: sqlite.Connection, run_id: int, now: str) -> None:
        connection.execute("UPDATE agent_runs SET updated_at = ? WHERE id = ?", (now, run_id))


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)
