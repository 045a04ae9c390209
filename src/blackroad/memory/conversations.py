"""Conversations kept on the server: each user's chats, their messages, search and export.

A conversation belongs to the user who made it (its ``owner``, a user's
name). Every query names the owner, so another user's conversation is
answered exactly as one that does not exist (404): ids cannot be probed.
Messages are appended, never edited; an assistant message keeps the model
that wrote it, its token counts and timings, and the passages it cited. The
one exception is a regenerated (or edited) last question: its new answer,
once complete, replaces the conversation's last user message and all after
it, in the same transaction.

Search runs over titles and message text. Message text is in the FTS5 index
``messages_fts`` (kept in step by triggers); a user's words are quoted one by
one before they reach FTS5, so no query syntax (``OR``, ``NEAR``, ``*``,
column filters) can be injected and every search is a plain AND of words.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from blackroad.errors import InvalidRequest, NotFound
from blackroad.store import sqlite
from blackroad.store.database import Database

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


_SUMMARY = """
SELECT c.id, c.title, c.model, c.created_at, c.updated_at,
       (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count
  FROM conversations c
"""
# A message that matches, for the snippet shown beside a search hit.
_SNIPPET = """
SELECT snippet(messages_fts, 0, '[', ']', '…', 12)
  FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid
 WHERE messages_fts MATCH ? AND m.conversation_id = ?
 ORDER BY rank LIMIT 1
"""


def _conversation(row: sqlite.Row, match: str | None = None) -> Conversation:
    return Conversation(
        row["id"], row["title"], row["model"], row["created_at"], row["updated_at"],
        row["message_count"], match,
    )  # fmt: skip


def _message(row: sqlite.Row) -> Message:
    citations = row["citations"]
    return Message(
        row["id"], row["role"], row["content"], row["model"], row["prompt_tokens"],
        row["completion_tokens"], row["ttft_ms"], row["duration_ms"],
        None if citations is None else json.loads(citations), row["created_at"],
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

        def insert(connection: sqlite.Connection) -> int:
            cursor = connection.execute(
                "INSERT INTO conversations (owner, title, model, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (owner, name, model, now, now),
            )
            assert cursor.lastrowid is not None
            _insert(connection, cursor.lastrowid, name, new, now)
            return cursor.lastrowid

        conversation_id = self.database.write(insert)
        return self.summary(owner, conversation_id)

    def list(
        self, owner: str, query: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Conversation]:
        """``owner``'s conversations, latest first; with ``query``, those whose title or
        messages hold every one of its words."""
        sql, parameters = f"{_SUMMARY} WHERE c.owner = ?", [owner]
        match = None
        if query is not None and query.strip():
            match = fts_query(query)
            if match is None:
                return []  # nothing but punctuation: no word can match
            words = _WORD.findall(query)
            in_title = " AND ".join(["c.title LIKE ? ESCAPE '\\'"] * len(words))
            # Built from constants: one placeholder per word.
            sql += (
                f" AND (({in_title}) OR c.id IN (SELECT m.conversation_id FROM messages_fts"  # noqa: S608
                " JOIN messages m ON m.id = messages_fts.rowid WHERE messages_fts MATCH ?))"
            )
            parameters += [*(_like(word) for word in words), match]
        sql += " ORDER BY c.updated_at DESC, c.id DESC LIMIT ? OFFSET ?"
        reader = self.database.reader()
        rows = reader.execute(sql, (*parameters, limit, offset)).fetchall()
        if match is None:
            return [_conversation(row) for row in rows]
        found = []
        for row in rows:
            snippet = reader.execute(_SNIPPET, (match, row["id"])).fetchone()
            found.append(_conversation(row, None if snippet is None else snippet[0]))
        return found

    def summary(self, owner: str, conversation_id: int) -> Conversation:
        """One of ``owner``'s conversations, without its messages."""
        row = (
            self.database.reader()
            .execute(f"{_SUMMARY} WHERE c.id = ? AND c.owner = ?", (conversation_id, owner))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"conversation {conversation_id} not found")
        return _conversation(row)

    def get(self, owner: str, conversation_id: int) -> Conversation:
        """One of ``owner``'s conversations, with its messages in order."""
        found = self.summary(owner, conversation_id)
        rows = (
            self.database.reader()
            .execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            )
            .fetchall()
        )
        return Conversation(**{**vars(found), "messages": tuple(_message(r) for r in rows)})

    def rename(self, owner: str, conversation_id: int, title: str) -> Conversation:
        name = self._title(title)
        self._change(
            owner,
            conversation_id,
            "UPDATE conversations SET title = ?, updated_at = ? WHERE id = ? AND owner = ?",
            (name, utc_now(), conversation_id, owner),
        )
        return self.summary(owner, conversation_id)

    def delete(self, owner: str, conversation_id: int) -> None:
        """Delete a conversation and its messages; memories taken from it stay, unlinked."""
        self._change(
            owner,
            conversation_id,
            "DELETE FROM conversations WHERE id = ? AND owner = ?",
            (conversation_id, owner),
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
        messages = [NewMessage.of(m) for m in (*turns, *([answer] if answer else []))]
        now = utc_now()

        def add(connection: sqlite.Connection) -> list[int]:
            row = connection.execute(
                "SELECT title FROM conversations WHERE id = ? AND owner = ?",
                (conversation_id, owner),
            ).fetchone()
            if row is None:
                raise NotFound(f"conversation {conversation_id} not found")
            if replacing is not None:
                connection.execute(
                    "DELETE FROM messages WHERE conversation_id = ? AND id >= ?",
                    (conversation_id, replacing),
                )
            return _insert(connection, conversation_id, row[0], messages, now)

        ids = self.database.write(add)
        marks = ",".join("?" * len(ids))
        rows = (
            self.database.reader()
            .execute(f"SELECT * FROM messages WHERE id IN ({marks}) ORDER BY id", ids)  # noqa: S608
            .fetchall()
        )
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

    def _change(
        self, owner: str, conversation_id: int, sql: str, parameters: tuple[object, ...]
    ) -> None:
        def work(connection: sqlite.Connection) -> None:
            if connection.execute(sql, parameters).rowcount == 0:
                raise NotFound(f"conversation {conversation_id} not found")

        self.database.write(work)


def _turns(messages: Sequence[Message]) -> builtins.list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _insert(
    connection: sqlite.Connection,
    conversation_id: int,
    title: str,
    messages: Sequence[NewMessage],
    now: str,
) -> list[int]:
    ids = []
    for m in messages:
        citations = None if m.citations is None else json.dumps(list(m.citations))
        cursor = connection.execute(
            "INSERT INTO messages (conversation_id, role, content, model, prompt_tokens,"
            " completion_tokens, ttft_ms, duration_ms, citations, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, m.role, m.content, m.model, m.prompt_tokens,
             m.completion_tokens, m.ttft_ms, m.duration_ms, citations, now),
        )  # fmt: skip
        assert cursor.lastrowid is not None
        ids.append(cursor.lastrowid)
    first_user = next((m.content for m in messages if m.role == "user"), None)
    if title == UNTITLED and first_user is not None and first_user.strip():
        title = title_from(first_user)
    model = next((m.model for m in reversed(messages) if m.model), None)
    connection.execute(
        "UPDATE conversations SET title = ?, model = coalesce(?, model), updated_at = ?"
        " WHERE id = ?",
        (title, model, now, conversation_id),
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
