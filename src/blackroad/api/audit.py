"""``/api/audit``: what an external witness needs to follow the audit log. Admins only.

The latest signed checkpoint (C2SP tlog-checkpoint, ``text/plain``), the
verifier key, an inclusion proof of a record in a tree size and a
consistency proof between two sizes (RFC 9162, hashes in base64).

For the desktop's Audit app: the records, newest first and paged; the
inspector's bundle as a download, written by the same ``AuditLog.export`` as
``blackroad audit export``; and a verification that exports the log and runs
the CLI's own verifier (``audit/verify.py``'s ``verify_bundle``) over that
bundle against this installation's key. Bundles are written to a private
temporary folder in the server's home (they hold whatever texts the log
keeps) and deleted once sent or checked.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, PlainTextResponse

from blackroad.api.auth import require_scope
from blackroad.api.state import audit_log
from blackroad.audit.log import AuditLog
from blackroad.audit.verify import verify_bundle
from blackroad.store.sqlite import MAX_INTEGER

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
    request: Request,
    index: int = Query(ge=0, le=MAX_INTEGER),
    size: int | None = Query(default=None, ge=1, le=MAX_INTEGER),
) -> dict[str, Any]:
    """Record ``index`` is leaf ``index`` of the tree of ``size`` (default: the latest)."""
    log = audit_log(request)
    tree = size if size is not None else await run_in_threadpool(log.size)
    hashes = await run_in_threadpool(log.inclusion, index, tree)
    return {"index": index, "size": tree, "hashes": _hashes(hashes)}


@router.get("/consistency")
async def consistency(
    request: Request,
    old: int = Query(ge=1, le=MAX_INTEGER, alias="from"),
    new: int | None = Query(default=None, ge=1, le=MAX_INTEGER, alias="to"),
) -> dict[str, Any]:
    """The tree of size ``from`` is a prefix of the tree of size ``to`` (default: the latest)."""
    log = audit_log(request)
    tree = new if new is not None else await run_in_threadpool(log.size)
    hashes = await run_in_threadpool(log.consistency, old, tree)
    return {"from": old, "to": tree, "hashes": _hashes(hashes)}


@router.get("/records")
async def records(
    request: Request,
    before: Annotated[int | None, Query(alias="from", ge=1, le=MAX_INTEGER)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    kind: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> dict[str, Any]:
    """Records newest first, below index ``from`` (default: the newest); ``next`` pages on."""
    log = audit_log(request)
    size = await run_in_threadpool(log.size)
    found = await run_in_threadpool(log.records, before, limit, kind)
    return {
        "size": size,
        "records": [
            {"index": index, "record": json.loads(text), "texts_kept": kept}
            for index, text, kept in found
        ],
        # The index to ask ``from`` next; None once the oldest record is shown.
        "next": found[-1][0] if len(found) == limit and found[-1][0] > 0 else None,
    }


def _export(log: AuditLog) -> Path:
    """The whole log as a bundle, in a private folder of its own beside the log's key.

    The bundle holds whatever texts the log keeps: the folder is 0700, as
    mkdtemp makes it, and the caller removes it once the bundle is sent or checked.
    """
    folder = Path(tempfile.mkdtemp(prefix=".audit-bundle-", dir=log.home))
    bundle = folder / "audit-bundle.zip"
    try:
        log.export(bundle)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return bundle


@router.get("/export")
async def export(request: Request) -> FileResponse:
    """The inspector's bundle of the whole log, as ``blackroad audit export`` writes it."""
    bundle = await run_in_threadpool(_export, audit_log(request))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return FileResponse(
        bundle,
        media_type="application/zip",
        filename=f"blackroad-audit-{stamp}.zip",
        headers={"Cache-Control": "no-store"},
        background=BackgroundTask(shutil.rmtree, bundle.parent, ignore_errors=True),
    )


@router.post("/verify")
async def verify(request: Request) -> dict[str, Any]:
    """Export the log and check the bundle with the CLI's verifier, against this log's key."""
    log = audit_log(request)

    def check() -> dict[str, Any]:
        bundle = _export(log)
        try:
            verdict = verify_bundle(bundle, log.verifier)
        finally:
            shutil.rmtree(bundle.parent, ignore_errors=True)
        return {
            "verified": verdict.ok,
            "records": verdict.records,
            "checkpoints": verdict.checkpoints,
            "problems": verdict.problems,
            "summary": verdict.summary(),
        }

    return await run_in_threadpool(check)
