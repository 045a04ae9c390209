"""Fuzz the audit bundle verifier (``audit/verify.py``): an inspector is handed any zip.

    python fuzz/audit_bundle.py -atheris_runs=20000

An input is either a zip file as it is (it starts with ``PK``), or the members
of a bundle separated by ``MEMBER`` (records, checkpoints, consistency proofs,
key), written into a zip here so that mutations reach the verifier's own
reading rather than the zip's checksums. Every input gets a ``Verdict``,
checked against the seed log's key and against the bundle's own: never an
exception, a hang, or memory out of proportion to the bundle.
"""

from __future__ import annotations

import io
import sys
import tempfile
import zipfile
from pathlib import Path

import atheris
from common import fuzz

with atheris.instrument_imports():
    from tests.audit.test_bundle import make_log

    from blackroad.audit.bundle import CHECKPOINTS, CONSISTENCY, KEY, RECORDS, write_bundle
    from blackroad.audit.verify import Verdict, verify_bundle

MEMBER = b"\n=====member=====\n"
NAMES = (RECORDS, CHECKPOINTS, CONSISTENCY, KEY)
LOG = make_log(12, 4, {9: 2})
FILE = Path(tempfile.mkdtemp(prefix="audit-fuzz-")) / "bundle.zip"


def bundle_bytes() -> bytes:
    write_bundle(FILE, LOG.lines, LOG.notes, LOG.verifier)
    return FILE.read_bytes()


def members(bundle: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        return MEMBER.join(archive.read(name) for name in NAMES)


def test_one_input(data: bytes) -> None:
    if data.startswith(b"PK"):
        FILE.write_bytes(data)
    else:
        with zipfile.ZipFile(FILE, "w") as archive:
            for name, member in zip(NAMES, data.split(MEMBER), strict=False):
                archive.writestr(name, member)
    for key in (LOG.verifier, None):
        if not isinstance(verify_bundle(FILE, key), Verdict):
            raise AssertionError("no verdict")


if __name__ == "__main__":
    whole = bundle_bytes()
    fuzz(test_one_input, {"bundle.zip": whole, "members": members(whole)})
    sys.exit(0)
