"""The audit trail: an append-only log an inspector can verify offline.

Every audited event is one record, the leaf of an RFC 9162 Merkle tree
(`merkle.py`); the log signs its tree head now and then as a C2SP checkpoint
with an Ed25519 key of its own (`checkpoint.py`); and an export is one zip
file, the bundle, that `bundle.py` writes and verifies with nothing but the
standard library and `cryptography`. `merkle.py`, `checkpoint.py` and
`bundle.py` import nothing else from BlackRoad, because the verifier runs on
an inspector's machine that has no server and no network.
"""
