"""Conversations kept on the server: each user's chats, their messages, search and export.

A conversation belongs to the user who made it (its ``owner``, a user's
name). Every query names the owner, so another user's conversation is
answered exactly as one that does not exist (404): ids cannot be probed.
Messages are appended, never edited; an assistant message keeps the model
that wrote it, its token counts and timings, and the passages it cited. The
one exception is a regenerated (or edited) last question: its new answer,
once complete, replaces the conversation's last user message and all after
it, in the same transaction.

Search runs over titles and message text: a plain AND of the query's words,
into which no query syntax (``OR``, ``NEAR``, ``*``, column filters) can be
injected. On SQLite message text is in the FTS5 index ``messages_fts`` (kept
in step by triggers), and a user's words are quoted one by one before they
reach it; on PostgreSQL it is the GIN index over ``to_tsvector('english',
content)`` (migration 0009), queried with ``plainto_tsquery``, which reads
every word as text (and, unlike FTS5, drops English stop words).

SQLAlchemy Core statements over ``store.schema``'s tables, on either database.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    ColumnElement,
    Connection,
    Delete,
    RowMapping,
    Select,
    Update,
    and_,
    bindparam,
    column,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    table,
    update,
)

from blackroad.errors import InvalidRequest, NotFound
from blackroad.store.database import Database
from blackroad.store.schema import conversations, messages

Role = Literal["system", "user", "assistant", "tool"]
ExportFormat = Literal["json", "markdown"]
ROLES: frozenset[str] = frozenset(get_args(Role))
# A title made from the first user message is cut to this many characters; one
# given is cut at TITLE_MAX.
TITLE_CHARS = 80
TITLE_MAX = 200
UNTITLED = ""  # a conversation that has had no user message yet

_WORD = re.compile(r"\w+")


def utc_now() -> str:
    """The time now as stored: ISO-8601 UTC with milliseconds, so times compare as text."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def title_from(text: str, limit: int = TITLE_CHARS) -> str:
    """A title from a text: its whitespace collapsed, cut at a word near ``limit`` characters."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + "…"


def fts_query(text: str) -> str | None:
    """``text`` as an FTS5 query matching every one of its words; None when it has none.

    Each word is a quoted string, so FTS5 reads it as text, never as an
    operator; ``\\w+`` holds no quote to escape.
    """
    words = _WORD.findall(text)
    return " ".join(f'"{word}"' for word in words) if words else None


def _like(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class NewMessage:
    """A message to append: a user's turn, or an answer with what it cost.

    Made from a chat message (``{"role", "content"}``, plus for an answer the
    fields below); other keys of a chat message (images, tool calls) are not kept.
    """

    role: Role
    content: str
    model: str | None = None  # the model that wrote an assistant message
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    duration_ms: float | None = None
    citations: Sequence[Mapping[str, Any]] | None = None  # the passages an answer used

    @classmethod
    def of(cls, message: Mapping[str, Any]) -> NewMessage:
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise InvalidRequest(f"a message's role is one of {sorted(ROLES)}", param="role")
        if not isinstance(content, str):
            raise InvalidRequest("a stored message's content is text", param="content")
        kept = {name: message[name] for name in _STATS if message.get(name) is not None}
        return cls(role, content, **kept)


_STATS = ("model", "prompt_tokens", "completion_tokens", "ttft_ms", "duration_ms", "citations")


@dataclass(frozen=True)
class Message:
    id: int
    role: str
    content: str
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_ms: float | None
    duration_ms: float | None
    citations: list[dict[str, Any]] | None
    created_at: str


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    model: str | None  # the model of its latest answer, or the one it was started with
    created_at: str
    updated_at: str
    message_count: int
    match: str | None = None  # where a search found it: a snippet of a message, if not the title
    messages: tuple[Message, ...] | None = field(default=None)  # only when asked for one

    def as_dict(self) -> dict[str, Any]:
        view = asdict(self)
        if self.messages is None:
            del view["messages"]
        return view


_c, _m = conversations.c, messages.c
_SUMMARY = select(
    _c.id, _c.title, _c.model, _c.created_at, _c.updated_at,
    select(func.count()).where(_m.conversation_id == _c.id).scalar_subquery().label(
        "message_count"
    ),
)  # fmt: skip
# Statements on every chat's path are built once, with parameters: building one
# per call cost more than running it (~0.1 ms on SQLite).
_ONE = _SUMMARY.where(_c.id == bindparam("conversation"), _c.owner == bindparam("owner"))
_TITLE = select(_c.title).where(_c.id == bindparam("conversation"), _c.owner == bindparam("owner"))
_MESSAGES = select(messages).order_by(_m.id)
_IN_CONVERSATION = _MESSAGES.where(_m.conversation_id == bindparam("conversation"))
_WITH_IDS = _MESSAGES.where(_m.id.in_(bindparam("ids", expanding=True)))
# The text search configuration of PostgreSQL's full-text indexes (0009): as a
# literal, so that the expressions below are those the indexes were made over.
_ENGLISH: ColumnElement[str] = literal_column("'english'")
_FTS5 = table("messages_fts", column("rowid"))
_FTS5_MATCH = literal_column("messages_fts").op("MATCH", is_comparison=True)
# PostgreSQL's snippet: FTS5's marks and length (below), in ts_headline's words.
_HEADLINE = "StartSel=[, StopSel=], MaxWords=12, MinWords=5"


def _search(dialect: str, words: Sequence[str]) -> tuple[ColumnElement[bool], Select[Any]]:
    """Where a conversation has a message holding every one of ``words``, and a select of
    the snippet of its best such message (for the bound ``conversation``), in ``dialect``."""
    if dialect == "postgresql":
        document = func.to_tsvector(_ENGLISH, _m.content)
        query = func.plainto_tsquery(_ENGLISH, " ".join(words))
        holds = document.op("@@", is_comparison=True)(query)
        snippet = (
            select(func.ts_headline(_ENGLISH, _m.content, query, _HEADLINE))
            .where(holds, _m.conversation_id == bindparam("conversation"))
            .order_by(func.ts_rank_cd(document, query).desc(), _m.id)
        )
        return _c.id.in_(select(_m.conversation_id).where(holds)), snippet.limit(1)
    holds = _FTS5_MATCH(bindparam("match", fts_query(" ".join(words))))
    indexed = _FTS5.join(messages, _m.id == _FTS5.c.rowid)
    snippet = (
        select(func.snippet(literal_column("messages_fts"), 0, "[", "]", "…", 12))
        .select_from(indexed)
        .where(holds, _m.conversation_id == bindparam("conversation"))
        .order_by(literal_column("rank"))
    )
    found = select(_m.conversation_id).select_from(indexed).where(holds)
    return _c.id.in_(found), snippet.limit(1)


def _conversation(row: RowMapping, match: str | None = None) -> Conversation:
    return Conversation(
        row["id"], row["title"], row["model"], row["created_at"], row["updated_at"],
        row["message_count"], match,
    )  # fmt: skip


def _message(row: RowMapping) -> Message:
    return Message(
        row["id"], row["role"], row["content"], row["model"], row["prompt_tokens"],
        row["completion_tokens"], row["ttft_ms"], row["duration_ms"], row["citations"],
        row["created_at"],
    )  # fmt: skip


class Conversations:
    """Every user's conversations, in one database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def create(
        self,
        owner: str,
        title: str | None = None,
        model: str | None = None,
        messages: Sequence[Mapping[str, Any]] = (),
    ) -> Conversation:
        """A new conversation, with its first chat ``messages`` if given.

        Without a ``title`` (or with a blank one) it takes its first user
        message's, trimmed, once it has one.
        """
        name = UNTITLED if title is None else title_from(title, TITLE_MAX)
        new = [NewMessage.of(m) for m in messages]
        now = utc_now()
        row = {"owner": owner, "title": name, "model": model, "created_at": now, "updated_at": now}
        with self.database.engine.begin() as connection:
            conversation_id: int = connection.execute(
                insert(conversations).returning(_c.id), row
            ).scalar_one()
            _insert(connection, conversation_id, name, new, now)
        return self.summary(owner, conversation_id)

    def list(
        self, owner: str, query: str | None = None, limit: int = 50, offset: int = 0
    ) -> builtins.list[Conversation]:
        """``owner``'s conversations, latest first; with ``query``, those whose title or
        messages hold every one of its words."""
        found = _SUMMARY.where(_c.owner == owner)
        words = _WORD.findall(query) if query is not None and query.strip() else None
        if words is not None:
            if not words:
                return []  # nothing but punctuation: no word can match
            in_messages, snippet = _search(self.database.dialect, words)
            in_title = and_(*(_c.title.ilike(_like(word), escape="\\") for word in words))
            found = found.where(or_(in_title, in_messages))
        found = found.order_by(_c.updated_at.desc(), _c.id.desc()).limit(limit).offset(offset)
        with self.database.engine.connect() as connection:
            rows = connection.execute(found).mappings().all()
            if words is None:
                return [_conversation(row) for row in rows]
            return [
                _conversation(row, connection.scalar(snippet, {"conversation": row["id"]}))
                for row in rows
            ]

    def summary(self, owner: str, conversation_id: int) -> Conversation:
        """One of ``owner``'s conversations, without its messages."""
        with self.database.engine.connect() as connection:
            return _summary(connection, owner, conversation_id)

    def get(self, owner: str, conversation_id: int) -> Conversation:
        """One of ``owner``'s conversations, with its messages in order."""
        with self.database.engine.connect() as connection:
            found = _summary(connection, owner, conversation_id)
            rows = connection.execute(_IN_CONVERSATION, {"conversation": conversation_id})
            stored = tuple(_message(row) for row in rows.mappings())
        return Conversation(**{**vars(found), "messages": stored})

    def rename(self, owner: str, conversation_id: int, title: str) -> Conversation:
        name = self._title(title)
        self._change(
            conversation_id,
            update(conversations)
            .where(_c.id == conversation_id, _c.owner == owner)
            .values(title=name, updated_at=utc_now()),
        )
        return self.summary(owner, conversation_id)

    def delete(self, owner: str, conversation_id: int) -> None:
        """Delete a conversation and its messages; memories taken from it stay, unlinked."""
        self._change(
            conversation_id,
            delete(conversations).where(_c.id == conversation_id, _c.owner == owner),
        )

    def append(
        self,
        owner: str,
        conversation_id: int,
        turns: Sequence[Mapping[str, Any]],
        answer: Mapping[str, Any] | None = None,
        replacing: int | None = None,
    ) -> builtins.list[Message]:
        """Add the chat's new ``turns``, then its ``answer``, to the end of a conversation.

        What the chat path calls once an answer is complete. ``answer`` is an
        assistant message with ``model``, ``prompt_tokens``, ``completion_tokens``,
        ``ttft_ms``, ``duration_ms`` and ``citations`` (each optional). The
        conversation takes the answer's model, and an untitled one the first
        user turn's text as its title. With ``replacing`` (a message id, from
        ``last_question``) that message and every later one go first.
        """
        new = [NewMessage.of(m) for m in (*turns, *([answer] if answer else []))]
        now = utc_now()
        with self.database.engine.begin() as connection:
            title = connection.scalar(_TITLE, {"conversation": conversation_id, "owner": owner})
            if title is None:
                raise NotFound(f"conversation {conversation_id} not found")
            if replacing is not None:
                connection.execute(
                    delete(messages).where(
                        _m.conversation_id == conversation_id, _m.id >= replacing
                    )
                )
            ids = _insert(connection, conversation_id, title, new, now)
        with self.database.engine.connect() as connection:
            rows = connection.execute(_WITH_IDS, {"ids": ids}).mappings()
            return [_message(row) for row in rows]

    def history(self, owner: str, conversation_id: int) -> builtins.list[dict[str, str]]:
        """The conversation as chat messages, oldest first: what a new turn is sent after."""
        return _turns(self.get(owner, conversation_id).messages or ())

    def last_question(
        self, owner: str, conversation_id: int
    ) -> tuple[builtins.list[dict[str, str]], int]:
        """The history before the last user message, and that message's id.

        What a regenerated answer is sent after, and where the messages it
        replaces begin (``append``'s ``replacing``).
        """
        messages = self.get(owner, conversation_id).messages or ()
        for position in range(len(messages) - 1, -1, -1):
            if messages[position].role == "user":
                return _turns(messages[:position]), messages[position].id
        raise InvalidRequest(
            f"conversation {conversation_id} has no question to answer again",
            param="blackroad.regenerate",
        )

    def export(self, owner: str, conversation_id: int, format: ExportFormat) -> str:
        """The whole conversation as JSON or as Markdown."""
        found = self.get(owner, conversation_id)
        if format == "json":
            return json.dumps(found.as_dict(), ensure_ascii=False, indent=2)
        if format == "markdown":
            return _markdown(found)
        raise InvalidRequest("the format is json or markdown", param="format")

    # -- helpers -------------------------------------------------------------

    @staticmethod
    def _title(title: str) -> str:
        name = title_from(title, TITLE_MAX)
        if not name:
            raise InvalidRequest("a title needs some text", param="title")
        return name

    def _change(self, conversation_id: int, statement: Update | Delete) -> None:
        """Run ``statement`` on one conversation; NotFound where it changed none."""
        with self.database.engine.begin() as connection:
            if connection.execute(statement).rowcount == 0:
                raise NotFound(f"conversation {conversation_id} not found")


def _summary(connection: Connection, owner: str, conversation_id: int) -> Conversation:
    rows = connection.execute(_ONE, {"conversation": conversation_id, "owner": owner})
    found = rows.mappings().first()
    if found is None:
        raise NotFound(f"conversation {conversation_id} not found")
    return _conversation(found)


def _turns(messages: Sequence[Message]) -> builtins.list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _insert(
    connection: Connection,
    conversation_id: int,
    title: str,
    new: Sequence[NewMessage],
    now: str,
) -> builtins.list[int]:
    rows = [
        {"conversation_id": conversation_id, "role": m.role, "content": m.content,
         "model": m.model, "prompt_tokens": m.prompt_tokens,
         "completion_tokens": m.completion_tokens, "ttft_ms": m.ttft_ms,
         "duration_ms": m.duration_ms,
         "citations": None if m.citations is None else [dict(c) for c in m.citations],
         "created_at": now}
        for m in new
    ]  # fmt: skip
    ids: builtins.list[int] = []
    if rows:
        added = insert(messages).returning(_m.id, sort_by_parameter_order=True)
        ids = list(connection.execute(added, rows).scalars())
    first_user = next((m.content for m in new if m.role == "user"), None)
    if title == UNTITLED and first_user is not None and first_user.strip():
        title = title_from(first_user)
    model = next((m.model for m in reversed(new) if m.model), None)
    connection.execute(
        update(conversations)
        .where(_c.id == conversation_id)
        .values(title=title, model=func.coalesce(model, _c.model), updated_at=now)
    )
    return ids


def _markdown(conversation: Conversation) -> str:
    lines = [f"# {conversation.title or 'Untitled conversation'}", ""]
    if conversation.model:
        lines.append(f"- Model: {conversation.model}")
    lines += [f"- Started: {conversation.created_at}", f"- Updated: {conversation.updated_at}", ""]
    for m in conversation.messages or ():
        heading = m.role.capitalize() + (f" ({m.model})" if m.model else "")
        lines += [f"## {heading}", "", m.content.strip(), ""]
        if m.citations:
            lines += ["Sources:", ""]
            lines += [f"- {json.dumps(c, ensure_ascii=False)}" for c in m.citations]
            lines.append("")
    return "\n".join(lines)
