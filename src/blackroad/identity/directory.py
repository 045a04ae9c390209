"""Users and API keys: creating them, and finding who a presented key belongs to.

A key is ``br-`` plus 32 random bytes (base64url). Only its SHA-256 is kept
(a key has 256 bits of entropy, so a slow hash adds nothing) together with
its first 12 characters, the prefix people see in listings and logs. Lookup
is by prefix, then a constant-time comparison of hashes.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from blackroad.errors import InvalidRequest, Unauthorized
from blackroad.identity.keys import same_secret
from blackroad.identity.passwords import hash_password
from blackroad.identity.types import SCOPES, Principal, Role, Scope
from blackroad.models import names
from blackroad.store.database import Database
from blackroad.store.schema import ApiKey, User

KEY_PREFIX_LENGTH = 12


@dataclass(frozen=True)
class NewKey:
    """A key just created: the secret is shown this once and never stored."""

    secret: str
    prefix: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were stored as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class Directory:
    def __init__(self, database: Database) -> None:
        self.database = database

    # -- users -------------------------------------------------------------

    def add_user(self, name: str, role: Role = "user", password: str | None = None) -> User:
        if role not in ("admin", "user"):
            raise InvalidRequest(f"role must be admin or user, not {role!r}", param="role")
        if not name.strip():
            raise InvalidRequest("a user needs a name", param="name")
        user = User(
            name=name.strip(),
            role=role,
            password_hash=hash_password(password) if password else None,
            disabled=False,
            created_at=datetime.now(UTC),
        )
        try:
            with self.database.session() as session, session.begin():
                session.add(user)
        except IntegrityError:
            raise InvalidRequest(f"user {name!r} already exists", param="name") from None
        return user

    def first_admin(self, name: str, password: str | None) -> tuple[str, NewKey] | None:
        """On an empty directory, create the admin ``name`` with a password and a key.

        Returns the password (generated unless given) and the admin key, to be
        shown once; ``None`` when users exist already.
        """
        with self.database.session() as session:
            if session.scalar(select(User.id).limit(1)) is not None:
                return None
        password = password or secrets.token_urlsafe(12)
        self.add_user(name, "admin", password)
        return password, self.create_key(name, "first admin", ("inference", "admin"))

    def users(self) -> Sequence[User]:
        with self.database.session() as session:
            return session.scalars(select(User).order_by(User.name)).all()

    @staticmethod
    def _user(session: Session, name: str) -> User:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise InvalidRequest(f"no user named {name!r}", param="user")
        return user

    def set_disabled(self, name: str, disabled: bool = True) -> None:
        with self.database.session() as session, session.begin():
            self._user(session, name).disabled = disabled

    # -- keys --------------------------------------------------------------

    def create_key(
        self,
        user: str,
        name: str = "default",
        scopes: Sequence[Scope] = ("inference",),
        models: Sequence[str] | None = None,
        expires_at: datetime | None = None,
    ) -> NewKey:
        unknown = set(scopes) - set(SCOPES)
        if unknown or not scopes:
            raise InvalidRequest(f"scopes must be among {', '.join(SCOPES)}", param="scopes")
        allowed = None if models is None else sorted({names.normalize(m) for m in models})
        secret = f"br-{secrets.token_urlsafe(32)}"
        prefix = secret[:KEY_PREFIX_LENGTH]
        with self.database.session() as session, session.begin():
            owner = self._user(session, user)
            if "admin" in scopes and owner.role != "admin":
                raise InvalidRequest("only an admin's key can have the admin scope", "scopes")
            session.add(
                ApiKey(
                    user_id=owner.id,
                    name=name,
                    prefix=prefix,
                    secret_hash=_hash(secret),
                    scopes=list(scopes),
                    models=allowed,
                    expires_at=expires_at,
                    revoked_at=None,
                    created_at=datetime.now(UTC),
                )
            )
        return NewKey(secret, prefix)

    def keys(self, user: str | None = None) -> list[tuple[ApiKey, str]]:
        """Keys with their owner's name, newest first."""
        with self.database.session() as session:
            query = select(ApiKey, User.name).join(User).order_by(ApiKey.id.desc())
            if user is not None:
                query = query.where(User.name == user)
            return [(key, owner) for key, owner in session.execute(query).all()]

    def revoke_key(self, prefix: str) -> None:
        with self.database.session() as session, session.begin():
            key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
            if key is None:
                raise InvalidRequest(f"no key with prefix {prefix!r}", param="prefix")
            key.revoked_at = key.revoked_at or datetime.now(UTC)

    def authenticate(self, secret: str) -> Principal:
        """The principal a presented key stands for; Unauthorized if it stands for none."""
        refused = Unauthorized("Incorrect API key provided.")
        if not secret.startswith("br-") or len(secret) < KEY_PREFIX_LENGTH:
            raise refused
        with self.database.session() as session:
            row = session.execute(
                select(ApiKey, User).join(User).where(ApiKey.prefix == secret[:KEY_PREFIX_LENGTH])
            ).first()
        if row is None:
            raise refused
        key, user = row
        if not same_secret(_hash(secret), key.secret_hash):
            raise refused
        now = datetime.now(UTC)
        expires_at = _utc(key.expires_at)
        if key.revoked_at is not None or user.disabled:
            raise Unauthorized("This API key has been revoked.")
        if expires_at is not None and expires_at <= now:
            raise Unauthorized("This API key has expired.")
        return Principal(
            user=user.name,
            role="admin" if user.role == "admin" else "user",
            scopes=frozenset(s for s in SCOPES if s in key.scopes),
            key_prefix=key.prefix,
            models=None if key.models is None else frozenset(key.models),
        )
