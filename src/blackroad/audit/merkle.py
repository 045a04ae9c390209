"""Merkle trees over SHA-256 as RFC 9162 (Certificate Transparency v2) defines them.

This module owns the hashing of the audit log: leaf and interior hashes, the
tree head (`root`), the compact range an append-only log keeps to know its
root without holding its leaves (`Frontier`), a tree that keeps every level
so proofs over a large log cost O(log n) each (`Tree`), and the two proofs
with their verifiers. The verifiers are the bit-twiddling algorithms of RFC
9162 §2.1.3.2 and §2.1.4.2, written from the RFC and sharing no code with
the proof generators, so a bug in one cannot hide a bug in the other.

Standard library only: the bundle verifier runs on machines with nothing else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

HASH_SIZE = 32

# RFC 9162 §2.1.1: the hash of an empty tree is the hash of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one leaf."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1): where RFC 9162 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 §2.1.1, computed straight from its recursive definition."""

    def mth(lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 1:
            return leaf_hashes[lo]
        k = _split(n)
        return node_hash(mth(lo, lo + k), mth(lo + k, hi))

    return mth(0, len(leaf_hashes)) if leaf_hashes else EMPTY_ROOT


def _fold(nodes: Sequence[bytes]) -> bytes:
    """The root over a compact range: its perfect subtrees, largest first, hashed right to left."""
    if not nodes:
        return EMPTY_ROOT
    result = nodes[-1]
    for node in reversed(nodes[:-1]):
        result = node_hash(node, result)
    return result


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ValueError(f"{what} must be {HASH_SIZE} bytes, got {len(value)}")


class Frontier:
    """The compact range of an append-only log: one perfect subtree per set bit of its size.

    O(log n) hashes, enough to append and to give the root after every append,
    and small enough to persist with each write (`to_json`) so a restarted log
    resumes without rereading its leaves.
    """

    __slots__ = ("_nodes", "_size")

    def __init__(self) -> None:
        self._size = 0
        # The roots of the perfect subtrees that make up [0, size), largest (leftmost) first.
        self._nodes: list[bytes] = []

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> None:
        """Add the next leaf hash: like a binary increment, each carry merges two subtrees."""
        _check_hash(leaf, "a leaf hash")
        node = leaf
        size = self._size
        nodes = self._nodes
        while size & 1:
            node = node_hash(nodes.pop(), node)
            size >>= 1
        nodes.append(node)
        self._size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        return _fold(self._nodes)

    def copy(self) -> Frontier:
        other = Frontier()
        other._size = self._size
        other._nodes = list(self._nodes)
        return other

    def to_json(self) -> dict[str, Any]:
        return {"size": self._size, "nodes": [node.hex() for node in self._nodes]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Frontier:
        """Restore a frontier saved by `to_json`; ValueError says what is wrong with a bad one."""
        size = data.get("size")
        nodes = data.get("nodes")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"frontier size must be a non-negative integer, got {size!r}")
        if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            raise ValueError("frontier nodes must be a list of hex strings")
        if len(nodes) != size.bit_count():
            raise ValueError(
                f"a frontier of size {size} has {size.bit_count()} nodes, got {len(nodes)}"
            )
        frontier = cls()
        for text in nodes:
            try:
                node = bytes.fromhex(text)
            except ValueError:
                raise ValueError(f"frontier node {text!r} is not hex") from None
            _check_hash(node, "a frontier node")
            frontier._nodes.append(node)
        frontier._size = size
        return frontier


class Tree:
    """Every level of a Merkle tree over a growing list of leaves, for roots and proofs.

    Level l holds the roots of the complete, aligned subtrees of 2**l leaves,
    32 bytes each in one bytearray (about 64 bytes per leaf in all), so the
    root of any size and any proof come from O(log n) stored nodes instead
    of rehashing the leaves: an export of a million records with a
    checkpoint every thousand needs a thousand consistency proofs.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        for leaf in leaf_hashes:
            self.append(leaf)

    @property
    def size(self) -> int:
        return len(self._levels[0]) // HASH_SIZE

    def append(self, leaf: bytes) -> None:
        _check_hash(leaf, "a leaf hash")
        index = self.size
        levels = self._levels
        levels[0] += leaf
        level = 0
        # While the new node is a right child, its parent is complete too.
        while (index >> level) & 1:
            nodes = levels[level]
            parent = node_hash(bytes(nodes[-2 * HASH_SIZE : -HASH_SIZE]), bytes(nodes[-HASH_SIZE:]))
            if len(levels) == level + 1:
                levels.append(bytearray())
            levels[level + 1] += parent
            level += 1

    def leaf(self, index: int) -> bytes:
        return self._node(0, index)

    def _node(self, level: int, index: int) -> bytes:
        start = index * HASH_SIZE
        return bytes(self._levels[level][start : start + HASH_SIZE])

    def _mth(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]); a complete aligned subtree is read from its level, not rehashed."""
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            level = n.bit_length() - 1
            return self._node(level, lo >> level)
        k = _split(n)
        return node_hash(self._mth(lo, lo + k), self._mth(lo + k, hi))

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is outside 0..{self.size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        """The root of the tree of the first `size` leaves (all of them by default)."""
        n = self._check_size(size)
        return self._mth(0, n) if n else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[size]) of RFC 9162 §2.1.3.1, the audit path nearest the leaf first."""
        n = self._check_size(size)
        if not 0 <= index < n:
            raise ValueError(f"leaf {index} is not in a tree of size {n}")
        path: list[bytes] = []
        lo, hi = 0, n
        # Walk down from the root; each step records the sibling subtree, so reverse at the end.
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                path.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._mth(lo, lo + k))
                lo += k
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[size]) of RFC 9162 §2.1.4.1 (empty when old_size is 0 or size)."""
        n = self._check_size(size)
        if not 0 <= old_size <= n:
            raise ValueError(f"old size {old_size} is outside 0..{n}")
        if old_size in (0, n):
            return []
        proof: list[bytes] = []
        # SUBPROOF(m, D[lo:hi], b) unrolled: m counts leaves of the old tree inside [lo, hi).
        lo, hi, m, whole = 0, n, old_size, True
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                proof.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._mth(lo, lo + k))
                lo, m, whole = lo + k, m - k, False
        if not whole:
            proof.append(self._mth(lo, hi))
        proof.reverse()
        return proof


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The inclusion proof of leaf `index` in the tree of all of `leaf_hashes`."""
    return Tree(leaf_hashes).inclusion_proof(index)


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """The proof that the tree of the first `old_size` leaves is a prefix of the whole tree."""
    return Tree(leaf_hashes).consistency_proof(old_size)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> bool:
    """RFC 9162 §2.1.3.2, step by step: does `proof` put `leaf` at `index` under `root_hash`?"""
    if not 0 <= index < size:
        return False
    if any(len(p) != HASH_SIZE for p in proof):
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, step by step: is the tree (old_size, old_root) a prefix of the new one?

    The RFC defines proofs for 0 < old_size < new_size; the edges follow from the
    definitions: every tree extends the empty tree, a tree extends only itself at
    its own size, and in both cases the proof is empty.
    """
    if not 0 <= old_size <= new_size:
        return False
    if any(len(p) != HASH_SIZE for p in proof):
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not proof and old_root == new_root
    # Step 1: a consistency proof between two different sizes is never empty.
    if not proof:
        return False
    path = list(proof)
    # Step 2: when the old tree is a perfect subtree its root is not sent; it starts the path.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # Step 3.
    fn, sn = old_size - 1, new_size - 1
    # Step 4: skip the levels where the old tree's last node is a right child.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 7.
    return fr == old_root and sr == new_root and sn == 0
