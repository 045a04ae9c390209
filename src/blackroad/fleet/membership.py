"""Membership of the fleet, on the control plane: join tokens, joining, and heartbeats.

An admin creates a join token (``brj-`` plus 256 random bits; only its
SHA-256 is kept, with a 12-character prefix to list and revoke it by). It
admits one node unless made for more (``uses``), and expires, an hour after
it is made unless told otherwise; its uses are counted in the same write as
the join they admit, so two machines racing for a token's last use never
both get in. A machine running ``blackroad node`` presents it to join: it
becomes a ``blackroad`` node of the fleet, reached at the URL it gave with
the key it gave (its own server's key, which the control plane presents to
it), and gets a credential of its own (``brn-`` plus 256 random bits, hashed
here too) for its heartbeats and for joining again. The token authorizes
joining and nothing else; it is never an API key.

A name is its node's: joining under a name already in the fleet takes the
node's own credential (the node joining again: a new key, URL and
credential, no token needed), or an admin asking to replace it (a machine
rebuilt without its ``node.json``). A node's credential authorizes that
node's heartbeats only; a heartbeat may move the node to another URL. Every
join and every move is an audit record (``fleet.join``, ``fleet.move``) in
the transaction that makes it. A revoked, expired or used-up token, a
credential replaced by a later join, or a node removed from the fleet is
refused on its next use.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from blackroad.audit.log import AuditLog, Entry
from blackroad.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized
from blackroad.fleet.nodes import check_url
from blackroad.identity.keys import hash_secret, same_secret
from blackroad.store.database import Database
from blackroad.store.schema import JoinToken, Node

TOKEN_PREFIX = "brj-"  # noqa: S105 (the visible start of every join token)
CREDENTIAL_PREFIX = "brn-"
# As for API keys: enough of the token to find it and to tell tokens apart.
TOKEN_PREFIX_LENGTH = 12
KIND = "blackroad"
# A join token's lifetime unless its maker says otherwise; and the longest and most uses.
DEFAULT_LIFETIME = timedelta(hours=1)
MAX_LIFETIME = timedelta(days=30)
MAX_USES = 1000
TokenState = Literal["active", "used", "revoked", "expired"]
JoinKind = Literal["joined", "rejoined", "replaced"]


@dataclass(frozen=True)
class NewToken:
    """A join token just created: the secret is shown this once and never stored."""

    secret: str
    prefix: str
    expires_at: datetime
    uses: int  # the joins it allows


@dataclass(frozen=True)
class TokenInfo:
    """A join token as an admin sees it: never its secret."""

    prefix: str
    state: TokenState
    created_at: datetime
    expires_at: datetime | None  # None only for a token older than expiries for all
    revoked_at: datetime | None
    used_at: datetime | None  # its last join, and by which node
    used_by: str | None
    uses: int  # joins allowed so far
    max_uses: int


@dataclass(frozen=True)
class Joined:
    """A node that just joined: its credential is shown this once and never stored."""

    name: str
    credential: str
    how: JoinKind


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were stored as UTC."""
    return None if moment is None else moment.replace(tzinfo=UTC)


def _token_state(token: JoinToken, now: datetime) -> TokenState:
    if token.revoked_at is not None:
        return "revoked"
    expires_at = _utc(token.expires_at)
    if expires_at is not None and expires_at <= now:
        return "expired"
    return "used" if token.uses >= token.max_uses else "active"


class Membership:
    """Join tokens and the nodes that joined with them, in the control plane's database.

    ``audit``: where joins and moves are recorded (the server's log; None where
    nothing joins or moves, as for the CLI's token commands).
    """

    def __init__(self, database: Database, audit: AuditLog | None = None) -> None:
        self.database = database
        self.audit = audit

    # -- tokens ------------------------------------------------------------

    def create_token(self, expires_at: datetime | None = None, uses: int = 1) -> NewToken:
        """A token admitting ``uses`` nodes until ``expires_at`` (default: an hour from now)."""
        now = datetime.now(UTC)
        expires_at = expires_at or now + DEFAULT_LIFETIME
        if not 1 <= uses <= MAX_USES:
            raise InvalidRequest(f"a join token admits 1 to {MAX_USES} nodes", "uses")
        if not now < expires_at <= now + MAX_LIFETIME:
            raise InvalidRequest(
                f"a join token expires within {MAX_LIFETIME.days} days", "expires_in"
            )
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        prefix = secret[:TOKEN_PREFIX_LENGTH]
        with self.database.session() as session, session.begin():
            session.add(
                JoinToken(
                    prefix=prefix,
                    secret_hash=hash_secret(secret),
                    expires_at=expires_at,
                    created_at=now,
                    max_uses=uses,
                    uses=0,
                )
            )
        return NewToken(secret, prefix, expires_at, uses)

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
                uses=row.uses,
                max_uses=row.max_uses,
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
        self,
        name: str,
        url: str,
        key: str | None,
        capabilities: Mapping[str, Any],
        token: str | None = None,
        credential: str | None = None,
        replaced_by: str | None = None,
    ) -> Joined:
        """Admit a node: a new one with ``token``, or one joining again under its name.

        A name in the fleet is taken only with its node's ``credential`` (no
        token needed then, and none is used) or when ``replaced_by`` names
        the admin replacing it (with a token); either way the node's earlier
        credential stops working. A peer of another kind keeps its name.
        """
        url = check_url(url)
        name = name.strip()
        if not name:
            raise InvalidRequest("a node needs a name", "name")
        issued = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        try:
            with self.database.session() as session, session.begin():
                holder = None if credential is None else _holder_of(session, credential)
                if holder is not None and holder.name != name:
                    raise Forbidden(
                        f"this credential is node {holder.name!r}'s: it joins under that name only"
                    )
                if holder is None:
                    if token is None:
                        raise Unauthorized(
                            "A join token is needed (or, to join again, the node's credential)."
                        )
                    _use_token(session, token, now, name)  # first: it takes the write lock
                node = session.scalar(select(Node).where(Node.name == name))
                how: JoinKind = "joined"
                previous_url = None
                if node is None:
                    node = Node(name=name, kind=KIND, models=[], created_at=now)
                    session.add(node)
                elif node.kind != KIND:
                    raise InvalidRequest(
                        f"{name!r} is a peer of kind {node.kind}; join under another name",
                        "name",
                    )
                elif holder is None and replaced_by is None:
                    raise Conflict(
                        f"a node named {name!r} is in the fleet: only that node (with its "
                        "credential) joins under its name, or an admin replacing it"
                    )
                else:
                    how, previous_url = ("rejoined" if holder else "replaced"), node.url
                node.url, node.api_key = url, key
                node.credential_hash = hash_secret(issued)
                node.state, node.last_seen, node.last_error = "up", now, None
                node.stats = {"capabilities": dict(capabilities)}
                facts = {
                    "node": name,
                    "how": how,
                    "url": url,
                    "previous_url": previous_url,
                    "token": None if holder or token is None else token[:TOKEN_PREFIX_LENGTH],
                    "replaced_by": replaced_by if how == "replaced" else None,
                }
                self._record(session, Entry("fleet.join", facts))
        except IntegrityError:  # the same name joined at this very moment
            raise Conflict(f"a node named {name!r} is joining already") from None
        return Joined(name, issued, how)

    def _record(self, session: Session, entry: Entry) -> None:
        """Append ``entry`` to the audit log in ``session``'s transaction, if there is a log."""
        if self.audit is not None:
            session.flush()
            self.audit.append_to(session.connection(), entry)

    # -- heartbeats --------------------------------------------------------

    def node_of(self, credential: str) -> str:
        """The name of the node holding ``credential``; ``Unauthorized`` for any other."""
        with self.database.session() as session:
            node = _holder_of(session, credential)
        if node is None:
            raise Unauthorized("Unknown node credential: this node is not in the fleet.")
        return node.name

    def heartbeat(
        self, credential: str, models: Sequence[str], stats: Mapping[str, Any], url: str | None
    ) -> str:
        """Record a node's report: seen now, serving ``models``; its name.

        ``url`` moves the node (a restart on another port, a new address):
        only its own credential does, and the move is an audit record.
        """
        new_url = None if url is None else check_url(url)
        with self.database.session() as session, session.begin():
            node = _holder_of(session, credential)
            if node is None:
                raise Unauthorized("Unknown node credential: this node is not in the fleet.")
            # Whether the node is up is the probes' to say (fleet/probes.py):
            # what matters is that the control plane reaches it, not that it
            # reaches the control plane.
            node.last_seen = datetime.now(UTC)
            node.models, node.stats = sorted(set(models)), dict(stats)
            if new_url is not None and new_url != node.url:
                moved = {"node": node.name, "from": node.url, "to": new_url}
                node.url = new_url
                self._record(session, Entry("fleet.move", moved))
            return node.name


def _holder_of(session: Session, credential: str) -> Node | None:
    """The node whose credential this is: not one removed, or re-joined since.

    Found by the credential's hash: a lookup by a hash leaks nothing of the
    secret through its timing (nobody can steer the bytes of a SHA-256), so
    no separate constant-time comparison is needed.
    """
    if not credential.startswith(CREDENTIAL_PREFIX):
        return None
    digest = hash_secret(credential)
    return session.scalar(select(Node).where(Node.credential_hash == digest, Node.kind == KIND))


def _use_token(session: Session, token: str, now: datetime, name: str) -> None:
    """Count one use of ``token`` for the node ``name``; ``Unauthorized`` if it has none left.

    The count is one conditional UPDATE, SQLite's write lock held from it to
    the commit: of two joins racing for a last use, the second finds none.
    """
    refused = Unauthorized("Invalid join token.")
    if not token.startswith(TOKEN_PREFIX) or len(token) <= TOKEN_PREFIX_LENGTH:
        raise refused
    row = session.scalar(select(JoinToken).where(JoinToken.prefix == token[:TOKEN_PREFIX_LENGTH]))
    if row is None or not same_secret(hash_secret(token), row.secret_hash):
        raise refused
    state = _token_state(row, now)
    if state == "revoked":
        raise Unauthorized("This join token has been revoked.")
    if state == "expired":
        raise Unauthorized("This join token has expired.")
    used_up = Unauthorized(f"This join token has been used ({row.max_uses} of {row.max_uses}).")
    if state == "used":
        raise used_up
    counted = session.execute(
        update(JoinToken)
        .where(JoinToken.id == row.id, JoinToken.uses < JoinToken.max_uses)
        .values(uses=JoinToken.uses + 1, used_at=now, used_by=name)
        .execution_options(synchronize_session=False)
    )
    if counted.rowcount != 1:  # type: ignore[attr-defined]
        raise used_up  # another join took the last use since the token was read
