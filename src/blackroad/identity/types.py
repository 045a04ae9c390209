"""The contract of ``identity/``: who a request runs as, and what it may do."""

from __future__ import annotations

from dataclasses import dataclass, fields
from fnmatch import fnmatchcase
from typing import Literal

Role = Literal["admin", "user"]
Scope = Literal["inference", "admin"]
SCOPES: tuple[Scope, ...] = ("inference", "admin")


@dataclass(frozen=True)
class Limits:
    """What a user or a key may use; ``None`` is no limit."""

    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens (in + out) per minute
    max_concurrent: int | None = None  # requests in flight at once
    daily_tokens: int | None = None  # per UTC day
    monthly_tokens: int | None = None  # per UTC calendar month

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def any(self) -> bool:
        return any(getattr(self, name) is not None for name in self.names())


NO_LIMITS = Limits()


@dataclass(frozen=True)
class Principal:
    """The caller of one request.

    ``allowlists`` restrict the models: a model is usable when it matches a
    pattern (``fnmatch``: ``gemma3:*``) of every list, the key's own and the
    one its user's groups give; no list means every model.
    """

    user: str
    role: Role
    scopes: frozenset[Scope]
    key_prefix: str | None = None  # None: no key (the local admin on a loopback bind)
    allowlists: tuple[frozenset[str], ...] = ()
    user_limits: Limits = NO_LIMITS
    key_limits: Limits = NO_LIMITS

    def may_use(self, model: str) -> bool:
        return all(any(fnmatchcase(model, p) for p in patterns) for patterns in self.allowlists)


LOCAL_ADMIN = Principal("local", "admin", frozenset(SCOPES))
