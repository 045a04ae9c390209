"""Membership of the fleet, on the control plane: join tokens, joining, and heartbeats.

An admin creates a join token (``brj-`` plus 256 random bits; only its
SHA-256 is kept, with a 12-character prefix to list and revoke it by). A
machine running ``blackroad node`` presents it once to join: it becomes a
``blackroad`` node of the fleet, reached at the URL it gave with the key it
gave (its own server's key, which the control plane presents to it), and
gets a credential of its own (``brn-`` plus 256 random bits, hashed here
too) for its heartbeats. The token authorizes joining and nothing else; it
is never an API key, and a node's credential authorizes heartbeats of that
node only. A revoked or expired token, a credential replaced by a later
join, or a node removed from the fleet is refused on its next use.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from blackroad.errors import InvalidRequest, NotFound, Unauthorized
from blackroad.fleet.nodes import check_url
from blackroad.identity.keys import hash_secret, same_secret
from blackroad.store.database import Database
from blackroad.store.schema import JoinToken, Node

TOKEN_PREFIX = "brj-"  # noqa: S105 (the visible start of every join token)
CREDENTIAL_PREFIX = "brn-"
# As for API keys: enough of the token to find it and to tell tokens apart.
TOKEN_PREFIX_LENGTH = 12
KIND = "blackroad"
TokenState = Literal["active", "revoked", "expired"]


@dataclass(frozen=True)
class NewToken:
    """A join token just created: the secret is shown this once and never stored."""

    secret: str
    prefix: str
    expires_at: datetime | None


@dataclass(frozen=True)
class TokenInfo:
    """A join token as an admin sees it: never its secret."""

    prefix: str
    state: TokenState
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    used_at: datetime | None  # its last join, and by which node
    used_by: str | None


@dataclass(frozen=True)
class Joined:
    """A node that just joined: its credential is shown this once and never stored."""

    name: str
    credential: str


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were stored as UTC."""
    return None if moment is None else moment.replace(tzinfo=UTC)


def _token_state(token: JoinToken, now: datetime) -> TokenState:
    if token.revoked_at is not None:
        return "revoked"
    expires_at = _utc(token.expires_at)
    return "expired" if expires_at is not None and expires_at <= now else "active"


class Membership:
    """Join tokens and the nodes that joined with them, in the control plane's database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    # -- tokens ------------------------------------------------------------

    def create_token(self, expires_at: datetime | None = None) -> NewToken:
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        prefix = secret[:TOKEN_PREFIX_LENGTH]
        with self.database.session() as session, session.begin():
            session.add(
                JoinToken(
                    prefix=prefix,
                    secret_hash=hash_secret(secret),
                    expires_at=expires_at,
                    created_at=datetime.now(UTC),
                )
            )
        return NewToken(secret, prefix, expires_at)

    def tokens(self) -> list[TokenInfo]:
        """Every join token, newest first."""
        now = datetime.now(UTC)
        with self.database.session() as session:
            rows = session.scalars(select(JoinToken).order_by(JoinToken.id.desc())).all()
        return [
            TokenInfo(
                prefix=row.prefix,
                state=_token_state(row, now),
                created_at=row.created_at.replace(tzinfo=UTC),
                expires_at=_utc(row.expires_at),
                revoked_at=_utc(row.revoked_at),
                used_at=_utc(row.used_at),
                used_by=row.used_by,
            )
            for row in rows
        ]

    def revoke_token(self, prefix: str) -> None:
        """Revoke a join token by its prefix; refused from its next use on."""
        with self.database.session() as session, session.begin():
            token = session.scalar(select(JoinToken).where(JoinToken.prefix == prefix))
            if token is None:
                raise NotFound(f"no join token with prefix {prefix!r}")
            token.revoked_at = token.revoked_at or datetime.now(UTC)

    # -- joining -----------------------------------------------------------

    def join(
        self, token: str, name: str, url: str, key: str | None, capabilities: Mapping[str, Any]
    ) -> Joined:
        """Admit a node presenting ``token``: a new node, or a new credential for a known one.

        A node of the same name that joined before is taken over (a machine
        rebuilt, or one re-joining with a fresh token): its earlier
        credential stops working. A peer of another kind keeps its name.
        """
        url = check_url(url)
        name = name.strip()
        if not name:
            raise InvalidRequest("a node needs a name", "name")
        credential = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        try:
            with self.database.session() as session, session.begin():
                row = self._valid_token(session, token, now)
                row.used_at, row.used_by = now, name
                node = session.scalar(select(Node).where(Node.name == name))
                if node is None:
                    node = Node(name=name, kind=KIND, models=[], created_at=now)
                    session.add(node)
                elif node.kind != KIND:
                    raise InvalidRequest(
                        f"{name!r} is a peer of kind {node.kind}; join under another name",
                        "name",
                    )
                node.url, node.api_key = url, key
                node.credential_hash = hash_secret(credential)
                node.state, node.last_seen, node.last_error = "up", now, None
                node.stats = {"capabilities": dict(capabilities)}
        except IntegrityError:  # the same name joined at this very moment
            raise InvalidRequest(f"a node named {name!r} is joining already", "name") from None
        return Joined(name, credential)

    @staticmethod
    def _valid_token(session: Session, token: str, now: datetime) -> JoinToken:
        """The token's row, if it is one and may be used now; ``Unauthorized`` otherwise."""
        refused = Unauthorized("Invalid join token.")
        if not token.startswith(TOKEN_PREFIX) or len(token) <= TOKEN_PREFIX_LENGTH:
            raise refused
        row = session.scalar(
            select(JoinToken).where(JoinToken.prefix == token[:TOKEN_PREFIX_LENGTH])
        )
        if row is None or not same_secret(hash_secret(token), row.secret_hash):
            raise refused
        state = _token_state(row, now)
        if state == "revoked":
            raise Unauthorized("This join token has been revoked.")
        if state == "expired":
            raise Unauthorized("This join token has expired.")
        return row

    # -- heartbeats --------------------------------------------------------

    def node_of(self, credential: str) -> str:
        """The name of the node holding ``credential``; ``Unauthorized`` for any other."""
        with self.database.session() as session:
            return self._holder(session, credential).name

    def heartbeat(
        self, credential: str, models: Sequence[str], stats: Mapping[str, Any], url: str | None
    ) -> str:
        """Record a node's report: seen now, serving ``models``; its name.

        ``url`` moves the node (a restart on another port, a new address);
        the credential proves it is the same node.
        """
        new_url = None if url is None else check_url(url)
        with self.database.session() as session, session.begin():
            node = self._holder(session, credential)
            # Whether the node is up is the probes' to say (fleet/probes.py):
            # what matters is that the control plane reaches it, not that it
            # reaches the control plane.
            node.last_seen = datetime.now(UTC)
            node.models, node.stats = sorted(set(models)), dict(stats)
            if new_url is not None:
                node.url = new_url
            return node.name

    @staticmethod
    def _holder(session: Session, credential: str) -> Node:
        """The node whose credential this is: not one removed, or re-joined since.

        Found by the credential's hash: a lookup by a hash leaks nothing of
        the secret through its timing (nobody can steer the bytes of a
        SHA-256), so no separate constant-time comparison is needed.
        """
        node = None
        if credential.startswith(CREDENTIAL_PREFIX):
            digest = hash_secret(credential)
            node = session.scalar(
                select(Node).where(Node.credential_hash == digest, Node.kind == KIND)
            )
        if node is None:
            raise Unauthorized("Unknown node credential: this node is not in the fleet.")
        return node
