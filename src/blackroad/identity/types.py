"""The contract of ``identity/``: who a request runs as, and what it may do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "user"]
Scope = Literal["inference", "admin"]
SCOPES: tuple[Scope, ...] = ("inference", "admin")


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    user: str
    role: Role
    scopes: frozenset[Scope]
    key_prefix: str | None = None  # None: no key (the local admin on a loopback bind)
    models: frozenset[str] | None = None  # None: every model

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


LOCAL_ADMIN = Principal("local", "admin", frozenset(SCOPES))
