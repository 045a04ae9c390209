"""Bodies and views of the identity routes: users, keys and groups, for admins and for oneself.

Update bodies are partial: a field left out is unchanged, a field sent as
``null`` is cleared (a limit of ``null`` is no limit).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from blackroad.identity.directory import limits_of
from blackroad.identity.passwords import MIN_LENGTH
from blackroad.identity.types import Role, Scope
from blackroad.store.schema import ApiKey, Group, LimitColumns, User
from blackroad.store.sqlite import MAX_INTEGER

Name = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
ModelList = Field(default=None, max_length=256)
DEFAULT_SCOPES: tuple[Scope, ...] = ("inference",)
# A limit is stored in SQLite, whose integers end here; past it a limit means nothing anyway.
Limit = Field(default=None, ge=0, le=MAX_INTEGER)
# Seconds a key may be made to live: a century (a later date overflowed datetime).
MAX_LIFETIME = 100 * 365 * 24 * 3600


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsBody(Strict):
    rpm: int | None = Limit
    tpm: int | None = Limit
    max_concurrent: int | None = Limit
    daily_tokens: int | None = Limit
    monthly_tokens: int | None = Limit

    def changes(self) -> dict[str, int | None]:
        """Only the limits the client sent, ``None`` for those it cleared."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class UserCreate(Strict):
    name: str = Name
    role: Role = "user"
    password: str | None = Field(default=None, min_length=MIN_LENGTH, max_length=1024)
    limits: LimitsBody | None = None
    groups: list[str] = Field(default_factory=list, max_length=64)


class UserUpdate(Strict):
    role: Role | None = None
    password: str | None = Field(default=None, min_length=MIN_LENGTH, max_length=1024)
    disabled: bool | None = None
    limits: LimitsBody | None = None


class KeyCreate(Strict):
    name: str = Field(default="default", min_length=1, max_length=128)
    scopes: list[Scope] = Field(default_factory=lambda: list(DEFAULT_SCOPES), min_length=1)
    models: list[str] | None = ModelList
    expires_in: int | None = Field(default=None, ge=60, le=MAX_LIFETIME, description="seconds")
    limits: LimitsBody | None = None

    def expires_at(self) -> datetime | None:
        if self.expires_in is None:
            return None
        return datetime.now(UTC) + timedelta(seconds=self.expires_in)


class UserKeyCreate(KeyCreate):
    """An admin creating a key for any user."""

    user: str = Name


class KeyUpdate(Strict):
    limits: LimitsBody


class GroupCreate(Strict):
    name: str = Name
    models: list[str] | None = ModelList
    members: list[str] = Field(default_factory=list, max_length=10_000)


class GroupUpdate(Strict):
    models: list[str] | None = ModelList
    add: list[str] = Field(default_factory=list, max_length=10_000)
    remove: list[str] = Field(default_factory=list, max_length=10_000)


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat()


def limits_view(row: LimitColumns) -> dict[str, int | None]:
    return vars(limits_of(row)).copy()


def user_view(user: User, groups: list[str]) -> dict[str, Any]:
    return {
        "name": user.name,
        "role": user.role,
        "disabled": user.disabled,
        "created_at": _time(user.created_at),
        "groups": groups,
        "limits": limits_view(user),
    }


def key_view(key: ApiKey, owner: str) -> dict[str, Any]:
    state: Literal["active", "revoked", "expired"] = "active"
    if key.revoked_at is not None:
        state = "revoked"
    elif key.expires_at is not None and key.expires_at.replace(tzinfo=UTC) <= datetime.now(UTC):
        state = "expired"
    return {
        "prefix": key.prefix,
        "user": owner,
        "name": key.name,
        "scopes": key.scopes,
        "models": key.models,
        "created_at": _time(key.created_at),
        "expires_at": _time(key.expires_at),
        "revoked_at": _time(key.revoked_at),
        "state": state,
        "limits": limits_view(key),
    }


def group_view(group: Group, members: list[str]) -> dict[str, Any]:
    return {
        "name": group.name,
        "models": group.models,
        "members": members,
        "created_at": _time(group.created_at),
    }
