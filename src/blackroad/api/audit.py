"""``/api/audit``: what an external witness needs to follow the audit log. Admins only.

The latest signed checkpoint (C2SP tlog-checkpoint, ``text/plain``), the
verifier key, an inclusion proof of a record in a tree size and a
consistency proof between two sizes (RFC 9162, hashes in base64).
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse

from blackroad.api.auth import require_scope
from blackroad.api.state import audit_log

router = APIRouter(prefix="/api/audit", dependencies=[Depends(require_scope("admin"))])


def _hashes(proof: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in proof]


@router.get("/checkpoint", response_class=PlainTextResponse)
async def checkpoint(request: Request) -> PlainTextResponse:
    """The latest checkpoint, signed now if records came since the last one."""
    return PlainTextResponse(await run_in_threadpool(audit_log(request).checkpoint))


@router.get("/key", response_class=PlainTextResponse)
async def key(request: Request) -> PlainTextResponse:
    return PlainTextResponse(audit_log(request).verifier + "\n")


@router.get("/proof")
async def proof(
    request: Request, index: int = Query(ge=0), size: int | None = Query(default=None, ge=1)
) -> dict[str, Any]:
    """Record ``index`` is leaf ``index`` of the tree of ``size`` (default: the latest)."""
    log = audit_log(request)
    tree = size if size is not None else await run_in_threadpool(log.size)
    hashes = await run_in_threadpool(log.inclusion, index, tree)
    return {"index": index, "size": tree, "hashes": _hashes(hashes)}


@router.get("/consistency")
async def consistency(
    request: Request,
    old: int = Query(ge=1, alias="from"),
    new: int | None = Query(default=None, ge=1, alias="to"),
) -> dict[str, Any]:
    """The tree of size ``from`` is a prefix of the tree of size ``to`` (default: the latest)."""
    log = audit_log(request)
    tree = new if new is not None else await run_in_threadpool(log.size)
    hashes = await run_in_threadpool(log.consistency, old, tree)
    return {"from": old, "to": tree, "hashes": _hashes(hashes)}
