"""The journal of agent runs: each run and its steps, written before the next step begins.

Every write here is one transaction that also appends the step's audit
record (``agent.*`` kinds), so a step and its audit record exist together or
not at all, and a kill -9 leaves the run exactly at its last committed step.
The run loop (``agents/runner.py``) reads a run back from here to go on
after a restart. SQLAlchemy Core statements over ``store.schema``'s tables,
on either database.

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
from collections.abc import Collection, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, RowMapping, Select, func, insert, select, update

from blackroad.agents.definitions import Agent, AgentDefinition
from blackroad.audit.log import AuditLog, Entry
from blackroad.errors import NotFound
from blackroad.memory.conversations import utc_now
from blackroad.store.database import Database
from blackroad.store.schema import RequestRecord, agent_runs, agent_steps, agents

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


def _run(row: RowMapping) -> Run:
    definition = AgentDefinition.of(row["definition"])
    return Run(
        row["id"], row["agent_id"], row["owner"], definition, row["input"], row["status"],
        row["answer"], row["error"], row["created_at"], row["updated_at"], row["sandbox"],
    )  # fmt: skip


def _step(row: RowMapping) -> Step:
    return Step(
        row["id"], row["run_id"], row["seq"], row["kind"], row["status"], row["name"],
        row["call_id"], row["input"], row["output"], row["decided_by"], row["reason"],
        row["duration_ms"], row["created_at"], row["updated_at"],
    )  # fmt: skip


_r, _st = agent_runs.c, agent_steps.c
# A run with its agent's sandbox (a run goes with its agent, so there is always one).
_RUN = select(agent_runs, agents.c.sandbox).join(agents, agents.c.id == _r.agent_id)
_STEPS = select(agent_steps)


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
        rows = self._rows(_RUN.where(_r.id == run_id))
        if not rows:
            raise NotFound(f"run {run_id} not found")
        return _run(rows[0])

    def runs(
        self,
        owner: str | None,
        agent_id: int | None = None,
        statuses: Collection[str] = (),
        limit: int = 100,
    ) -> builtins.list[Run]:
        """Newest first; ``owner`` None: everyone's (what an admin sees)."""
        query = _RUN.order_by(_r.id.desc()).limit(limit)
        if owner is not None:
            query = query.where(_r.owner == owner)
        if agent_id is not None:
            query = query.where(_r.agent_id == agent_id)
        if statuses:
            query = query.where(_r.status.in_(statuses))
        return [_run(row) for row in self._rows(query)]

    def steps(self, run_id: int) -> builtins.list[Step]:
        return [
            _step(row) for row in self._rows(_STEPS.where(_st.run_id == run_id).order_by(_st.seq))
        ]

    def step(self, run_id: int, step_id: int) -> Step:
        rows = self._rows(_STEPS.where(_st.run_id == run_id, _st.id == step_id))
        if not rows:
            raise NotFound(f"step {step_id} of run {run_id} not found")
        return _step(rows[0])

    def _rows(self, query: Select[Any]) -> Sequence[RowMapping]:
        with self.database.engine.connect() as connection:
            return connection.execute(query).mappings().all()

    # -- writes --------------------------------------------------------------

    def start(self, agent: Agent, text: str) -> Run:
        """A new run of ``agent`` on ``text``, with the agent's definition as it is now."""
        now = utc_now()
        row = {
            "agent_id": agent.id, "owner": agent.owner, "definition": agent.definition.to_json(),
            "input": text, "status": "running", "created_at": now, "updated_at": now,
        }  # fmt: skip
        with self.database.engine.begin() as connection:
            run_id: int = connection.execute(insert(agent_runs).returning(_r.id), row).scalar_one()
            facts = {"run": run_id, "agent": agent.definition.name, "user": agent.owner}
            sent = {"definition": agent.definition.to_json(), "input": text}
            self.audit.append_to(connection, audit_entry("run", facts, sent))
        return self.run(run_id)

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
        row = {
            "run_id": run.id, "kind": kind, "status": status, "name": name, "call_id": call_id,
            "input": sent, "output": output, "duration_ms": duration_ms, "created_at": now,
            "updated_at": now,
            "seq": select(func.coalesce(func.max(_st.seq), 0) + 1)
            .where(_st.run_id == run.id)
            .scalar_subquery(),
        }  # fmt: skip
        new_step = insert(agent_steps).values(row).returning(_st.id)

        def work(connection: Connection) -> None:
            added.append(connection.execute(new_step).scalar_one())
            self._touch(connection, run.id, now)
            if audit is not None:
                self.audit.append_to(connection, audit)

        added: list[int] = []
        if usage is None:
            with self.database.engine.begin() as connection:
                work(connection)
        else:  # in the request log too: the owner's usage, budgets and costs count it
            self.database.record_request(usage, also=work)
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
        given = {"output": output, "duration_ms": duration_ms, "decided_by": decided_by,
                 "reason": reason}  # fmt: skip
        change = (
            update(agent_steps)
            .where(_st.id == step.id, _st.status == (expect or step.status))
            .values(
                status=status,
                updated_at=now,
                **{column: value for column, value in given.items() if value is not None},
            )
        )
        with self.database.engine.begin() as connection:
            if connection.execute(change).rowcount == 0:
                return None
            self._touch(connection, step.run_id, now)
            if audit is not None:
                self.audit.append_to(connection, audit)
        return self.step(step.run_id, step.id)

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
        given = {"answer": answer, "error": error}
        change = (
            update(agent_runs)
            .where(_r.id == run.id, _r.status.not_in(sorted(FINISHED)))
            .values(
                status=status,
                updated_at=utc_now(),
                **{column: value for column, value in given.items() if value is not None},
            )
        )
        with self.database.engine.begin() as connection:
            if connection.execute(change).rowcount == 0:
                return None
            if audit is not None:
                self.audit.append_to(connection, audit)
        return self.run(run.id)

    @staticmethod
    def _touch(connection: Connection, run_id: int, now: str) -> None:
        connection.execute(update(agent_runs).where(_r.id == run_id).values(updated_at=now))
