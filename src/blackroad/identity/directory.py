"""Users, groups and API keys: creating them, and finding who a presented key belongs to.

A key is ``br-`` plus 32 random bytes (base64url). Only its SHA-256 is kept
(a key has 256 bits of entropy, so a slow hash adds nothing) together with
its first 12 characters, the prefix people see in listings and logs. Lookup
is by prefix, then a constant-time comparison of hashes.

A key's rights never outlive its user's: what a request may do is the key's
scopes intersected with what the user's current role allows, read on every
request, so a demoted admin's admin key loses the admin scope on the very
next request. A session (a key ``log_in`` made for a name and a password)
ends when its user's role changes, when they are disabled and when their
password changes; the API keys they made go on (with their scopes cut to
the role), since a script's key is not a login.

Groups give their members access to models. A user in no group may use
every model; a user in groups may use the models of any of them (a group
without a model list gives every model); admins may use every model. A key's
own model list narrows that further.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from blackroad.errors import InvalidRequest, NotFound, Unauthorized
from blackroad.identity.keys import hash_secret, same_secret
from blackroad.identity.passwords import hash_password, verify_password
from blackroad.identity.types import LOCAL_ADMIN, NO_LIMITS, SCOPES, Limits, Principal, Role, Scope
from blackroad.models import names
from blackroad.store.database import Database, Row
from blackroad.store.schema import ApiKey, Group, GroupMember, LimitColumns, User

KEY_PREFIX_LENGTH = 12


@dataclass(frozen=True)
class NewKey:
    """A key just created: the secret is shown this once and never stored."""

    secret: str
    prefix: str


def model_patterns(models: Sequence[str]) -> list[str]:
    """Model names normalized (``name`` -> ``name:latest``); ``fnmatch`` patterns kept as given."""
    patterns = set()
    for model in models:
        wildcard = any(c in model for c in "*?[")
        patterns.add(model.strip().lower() if wildcard else names.normalize(model))
    return sorted(patterns)


def limits_of(row: LimitColumns) -> Limits:
    return Limits(**{name: getattr(row, name) for name in Limits.names()})


def _apply_limits(row: LimitColumns, changes: dict[str, int | None]) -> None:
    for name, value in changes.items():
        if name not in Limits.names():
            raise InvalidRequest(f"unknown limit {name!r}", param=name)
        if value is not None and value < 0:
            raise InvalidRequest(f"{name} must be at least 0", param=name)
        setattr(row, name, value)


@cache
def _unknown_user_hash() -> str:
    """Checked when a name has no password, so timing does not tell which names exist."""
    return hash_password(secrets.token_urlsafe(16))


def _role_scopes(role: str) -> tuple[Scope, ...]:
    """What a user in ``role`` may do at most, whatever their keys say: everything for an admin."""
    return SCOPES if role == "admin" else ("inference",)


def _principal(row: Row, scopes: frozenset[Scope], key: bool) -> Principal:
    """The principal of a user's row (``Database.user_row``), or with ``key`` of a key's row
    (``Database.key_row``: the user's columns and the key's prefix, models and limits)."""
    allowlists = []
    if key and (models := json.loads(row["models"])) is not None:
        allowlists.append(frozenset(models))
    group_models = json.loads(row["group_models"])
    if row["role"] != "admin" and group_models and None not in group_models:
        allowlists.append(frozenset(m for group in group_models for m in group))
    return Principal(
        user=row["user"],
        role="admin" if row["role"] == "admin" else "user",
        scopes=scopes,
        key_prefix=row["prefix"] if key else None,
        allowlists=tuple(allowlists),
        user_limits=Limits(**{name: row[f"user_{name}"] for name in Limits.names()}),
        key_limits=Limits(**{name: row[name] for name in Limits.names()}) if key else NO_LIMITS,
    )


def _stored_time(value: str | datetime) -> datetime:
    """A time of a plain read: SQLite's ISO text, UTC without the zone; PostgreSQL's datetime."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were stored as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class Directory:
    def __init__(self, database: Database) -> None:
        self.database = database

    # -- users -------------------------------------------------------------

    def add_user(
        self,
        name: str,
        role: Role = "user",
        password: str | None = None,
        limits: dict[str, int | None] | None = None,
        groups: Sequence[str] = (),
    ) -> User:
        if role not in ("admin", "user"):
            raise InvalidRequest(f"role must be admin or user, not {role!r}", param="role")
        if not name.strip():
            raise InvalidRequest("a user needs a name", param="name")
        if name.strip() == LOCAL_ADMIN.user:  # it would own what the local admin owns
            raise InvalidRequest(f"{LOCAL_ADMIN.user!r} is the local admin's name", param="name")
        user = User(
            name=name.strip(),
            role=role,
            password_hash=hash_password(password) if password else None,
            disabled=False,
            created_at=datetime.now(UTC),
        )
        _apply_limits(user, limits or {})
        try:
            with self.database.session() as session, session.begin():
                session.add(user)
                session.flush()
                for group in groups:
                    session.merge(
                        GroupMember(group_id=self._group(session, group).id, user_id=user.id)
                    )
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
            raise NotFound(f"no user named {name!r}")
        return user

    def user(self, name: str) -> User:
        with self.database.session() as session:
            return self._user(session, name)

    def update_user(
        self,
        name: str,
        role: Role | None = None,
        password: str | None = None,
        disabled: bool | None = None,
        limits: dict[str, int | None] | None = None,
    ) -> None:
        """Change what is given; ``limits`` maps limit names to a value or ``None`` (no limit)."""
        if role is not None and role not in ("admin", "user"):
            raise InvalidRequest(f"role must be admin or user, not {role!r}", param="role")
        with self.database.session() as session, session.begin():
            user = self._user(session, name)
            # A new role, a new password or disabling ends every session of theirs, in the
            # same transaction: the next request of a session opened before is refused.
            ends_sessions = (
                (role is not None and role != user.role)
                or password is not None
                or (disabled is True and not user.disabled)
            )
            if role is not None:
                user.role = role
            if password is not None:
                user.password_hash = hash_password(password)
            if disabled is not None:
                user.disabled = disabled
            _apply_limits(user, limits or {})
            if ends_sessions:
                session.execute(
                    update(ApiKey)
                    .where(
                        ApiKey.user_id == user.id,
                        ApiKey.session.is_(True),
                        ApiKey.revoked_at.is_(None),
                    )
                    .values(revoked_at=datetime.now(UTC))
                )

    # -- groups ------------------------------------------------------------

    def add_group(
        self, name: str, models: Sequence[str] | None = None, members: Sequence[str] = ()
    ) -> None:
        if not name.strip():
            raise InvalidRequest("a group needs a name", param="name")
        group = Group(
            name=name.strip(),
            models=None if models is None else model_patterns(models),
            created_at=datetime.now(UTC),
        )
        try:
            with self.database.session() as session, session.begin():
                session.add(group)
                session.flush()
                for member in members:
                    session.merge(
                        GroupMember(group_id=group.id, user_id=self._user(session, member).id)
                    )
        except IntegrityError:
            raise InvalidRequest(f"group {name!r} already exists", param="name") from None

    @staticmethod
    def _group(session: Session, name: str) -> Group:
        group = session.scalar(select(Group).where(Group.name == name))
        if group is None:
            raise NotFound(f"no group named {name!r}")
        return group

    def groups(self) -> list[tuple[Group, list[str]]]:
        """Every group with the names of its members."""
        with self.database.session() as session:
            members: dict[int, list[str]] = {}
            query = select(GroupMember.group_id, User.name).join(User).order_by(User.name)
            for group_id, user in session.execute(query):
                members.setdefault(group_id, []).append(user)
            groups = session.scalars(select(Group).order_by(Group.name)).all()
            return [(group, members.get(group.id, [])) for group in groups]

    def set_group_models(self, name: str, models: Sequence[str] | None) -> None:
        """The models a group gives access to; ``None``: every model."""
        with self.database.session() as session, session.begin():
            self._group(session, name).models = None if models is None else model_patterns(models)

    def change_members(
        self, name: str, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> None:
        with self.database.session() as session, session.begin():
            group = self._group(session, name)
            for member in add:
                session.merge(
                    GroupMember(group_id=group.id, user_id=self._user(session, member).id)
                )
            for member in remove:
                user = self._user(session, member)
                session.execute(
                    delete(GroupMember).where(
                        GroupMember.group_id == group.id, GroupMember.user_id == user.id
                    )
                )

    def delete_group(self, name: str) -> None:
        with self.database.session() as session, session.begin():
            session.delete(self._group(session, name))

    def groups_of(self, name: str) -> list[str]:
        with self.database.session() as session:
            query = (
                select(Group.name)
                .join(GroupMember, GroupMember.group_id == Group.id)
                .join(User, User.id == GroupMember.user_id)
                .where(User.name == name)
                .order_by(Group.name)
            )
            return list(session.scalars(query))

    # -- keys --------------------------------------------------------------

    def create_key(
        self,
        user: str,
        name: str = "default",
        scopes: Sequence[Scope] = ("inference",),
        models: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        limits: dict[str, int | None] | None = None,
        *,
        session: bool = False,
    ) -> NewKey:
        """A new key of ``user``; ``session``: a login's, ended by a change of the user's rights."""
        unknown = set(scopes) - set(SCOPES)
        if unknown or not scopes:
            raise InvalidRequest(f"scopes must be among {', '.join(SCOPES)}", param="scopes")
        allowed = None if models is None else model_patterns(models)
        secret = f"br-{secrets.token_urlsafe(32)}"
        prefix = secret[:KEY_PREFIX_LENGTH]
        with self.database.session() as db, db.begin():
            owner = self._user(db, user)
            if "admin" in scopes and owner.role != "admin":
                raise InvalidRequest("only an admin's key can have the admin scope", "scopes")
            key = ApiKey(
                user_id=owner.id,
                name=name,
                prefix=prefix,
                secret_hash=hash_secret(secret),
                scopes=list(scopes),
                models=allowed,
                expires_at=expires_at,
                revoked_at=None,
                created_at=datetime.now(UTC),
                session=session,
            )
            _apply_limits(key, limits or {})
            db.add(key)
        return NewKey(secret, prefix)

    def key(self, prefix: str, owner: str | None = None) -> tuple[ApiKey, str]:
        """A key and its owner's name; with ``owner``, only if the key is that user's."""
        with self.database.session() as session:
            key = self._key(session, prefix, owner)
            return key, session.get_one(User, key.user_id).name

    def keys(self, user: str | None = None) -> list[tuple[ApiKey, str]]:
        """Keys with their owner's name, newest first."""
        with self.database.session() as session:
            query = select(ApiKey, User.name).join(User).order_by(ApiKey.id.desc())
            if user is not None:
                query = query.where(User.name == user)
            return [(key, owner) for key, owner in session.execute(query).all()]

    @staticmethod
    def _key(session: Session, prefix: str, owner: str | None) -> ApiKey:
        query = select(ApiKey).where(ApiKey.prefix == prefix)
        if owner is not None:
            query = query.join(User).where(User.name == owner)
        key = session.scalar(query)
        if key is None:
            raise NotFound(f"no key with prefix {prefix!r}")
        return key

    def revoke_key(self, prefix: str, owner: str | None = None) -> None:
        """Revoke a key; with ``owner``, only if it is one of that user's keys."""
        with self.database.session() as session, session.begin():
            key = self._key(session, prefix, owner)
            key.revoked_at = key.revoked_at or datetime.now(UTC)

    def set_key_limits(self, prefix: str, limits: dict[str, int | None]) -> None:
        with self.database.session() as session, session.begin():
            _apply_limits(self._key(session, prefix, None), limits)

    def has_usable_key(self) -> bool:
        """Whether any key could be accepted now (not revoked or expired, its user enabled)."""
        now = datetime.now(UTC)
        with self.database.session() as session:
            query = (
                select(ApiKey.expires_at)
                .join(User)
                .where(ApiKey.revoked_at.is_(None), User.disabled.is_(False))
            )
            return any((expiry := _utc(e)) is None or expiry > now for e in session.scalars(query))

    def log_in(self, name: str, password: str, lifetime: timedelta) -> NewKey:
        """A session key for a user's name and password, expiring after ``lifetime``."""
        with self.database.session() as session:
            user = session.scalar(select(User).where(User.name == name))
        stored = user.password_hash if user is not None and not user.disabled else None
        if not verify_password(password, stored or _unknown_user_hash()) or user is None:
            raise Unauthorized("Incorrect user name or password.")
        return self.create_key(
            name,
            "session",
            _role_scopes(user.role),
            expires_at=datetime.now(UTC) + lifetime,
            session=True,
        )

    def authenticate(self, secret: str) -> Principal:
        """The principal a presented key stands for; Unauthorized if it stands for none."""
        refused = Unauthorized("Incorrect API key provided.")
        if not secret.startswith("br-") or len(secret) < KEY_PREFIX_LENGTH:
            raise refused
        row = self.database.key_row(secret[:KEY_PREFIX_LENGTH])
        if row is None or not same_secret(hash_secret(secret), row["secret_hash"]):
            raise refused
        if row["revoked_at"] is not None or row["disabled"]:
            raise Unauthorized("This API key has been revoked.")
        expires_at = row["expires_at"]
        if expires_at is not None and _stored_time(expires_at) <= datetime.now(UTC):
            raise Unauthorized("This API key has expired.")
        # Never more than the user's role allows now, whatever the key was made with.
        granted = set(json.loads(row["scopes"])) & set(_role_scopes(row["role"]))
        return _principal(row, frozenset(s for s in SCOPES if s in granted), key=True)

    def acting_user(self, name: str) -> Principal:
        """User ``name`` acting without a key, as their agent runs do.

        Their role's scopes, their groups' models and their own limits: what
        any key of theirs is allowed at most. Unauthorized once they are
        disabled or removed. The local admin (the shared key's) is itself.
        """
        if name == LOCAL_ADMIN.user:
            return LOCAL_ADMIN
        row = self.database.user_row(name)
        if row is None or row["disabled"]:
            raise Unauthorized(f"the user '{name}' is disabled or was removed")
        return _principal(row, frozenset(_role_scopes(row["role"])), key=False)
