"""RFC 9162 Merkle trees: known answers, the RFC's own recursive proofs, and properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blackroad.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    Tree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

# The RFC 6962 test vectors (certificate-transparency, Go's internal/tlog): eight leaves
# and the roots of the trees of their first 1..8.
LEAVES = [
    h(x)
    for x in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    h(x)
    for x in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
HASHES = [leaf_hash(leaf) for leaf in LEAVES]


def leaves(n: int, seed: int = 0) -> list[bytes]:
    return [leaf_hash(f"{seed}:{i}".encode()) for i in range(n)]


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


# The RFC's recursive definitions (§2.1.3.1 PATH, §2.1.4.1 PROOF/SUBPROOF), as an oracle.
def rfc_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = split(len(d))
    if m < k:
        return [*rfc_path(m, d[:k]), root(d[k:])]
    return [*rfc_path(m - k, d[k:]), root(d[:k])]


def rfc_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [root(d)]
    k = split(len(d))
    if m <= k:
        return [*rfc_subproof(m, d[:k], b), root(d[k:])]
    return [*rfc_subproof(m - k, d[k:], False), root(d[:k])]


def flip(proof: list[bytes], at: int, bit: int) -> list[bytes]:
    node = bytearray(proof[at % len(proof)])
    node[bit // 8 % len(node)] ^= 1 << (bit % 8)
    return [*proof[: at % len(proof)], bytes(node), *proof[at % len(proof) + 1 :]]


# -- known answers --------------------------------------------------------------


def test_hashes_are_domain_separated() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert root([]) == EMPTY_ROOT == Frontier().root() == Tree().root()
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    assert root([leaf_hash(b"x")]) == leaf_hash(b"x")


def test_rfc6962_roots() -> None:
    tree, frontier = Tree(), Frontier()
    for n, (leaf, expected) in enumerate(zip(HASHES, ROOTS, strict=True), 1):
        tree.append(leaf)
        frontier.append(leaf)
        assert root(HASHES[:n]) == expected
        assert tree.root() == frontier.root() == expected


def test_rfc6962_proofs() -> None:
    assert inclusion_proof(HASHES, 5) == [
        h(x)
        for x in (
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        )
    ]
    assert inclusion_proof(HASHES[:3], 2) == [ROOTS[1]]
    six_to_eight = consistency_proof(HASHES, 6)
    assert six_to_eight == [
        h(x)
        for x in (
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        )
    ]
    assert verify_consistency(6, 8, ROOTS[5], ROOTS[7], six_to_eight)
    assert not verify_consistency(6, 8, ROOTS[4], ROOTS[7], six_to_eight)
    assert consistency_proof(HASHES[:5], 2) == [
        h(x)
        for x in (
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        )
    ]
    assert verify_inclusion(HASHES[5], 5, 8, inclusion_proof(HASHES, 5), ROOTS[7])
    assert not verify_inclusion(HASHES[5], 4, 8, inclusion_proof(HASHES, 5), ROOTS[7])


def test_proofs_are_the_rfcs_recursive_definitions() -> None:
    for n in range(1, 70):
        d = leaves(n)
        tree = Tree(d)
        for m in range(n):
            assert tree.inclusion_proof(m) == rfc_path(m, d)
        for m in range(1, n):
            assert tree.consistency_proof(m) == rfc_subproof(m, d, True)
        assert tree.consistency_proof(0) == tree.consistency_proof(n) == []


def test_edges() -> None:
    d = leaves(5)
    assert verify_consistency(0, 5, EMPTY_ROOT, root(d), [])
    assert not verify_consistency(0, 5, root(d), root(d), [])
    assert verify_consistency(5, 5, root(d), root(d), [])
    assert not verify_consistency(5, 5, root(d), root(d[:4]), [])
    assert not verify_consistency(3, 5, root(d[:3]), root(d), [])  # never empty between sizes
    assert not verify_consistency(5, 3, root(d), root(d[:3]), consistency_proof(d, 3))
    assert not verify_inclusion(d[0], 5, 5, [], root(d))
    assert not verify_inclusion(d[0], -1, 5, [], root(d))
    assert not verify_inclusion(d[0], 0, 5, [b"short", *inclusion_proof(d, 0)[1:]], root(d))
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof(d, 5)
    with pytest.raises(ValueError, match="outside"):
        consistency_proof(d, 6)
    with pytest.raises(ValueError, match="32 bytes"):
        Frontier().append(b"short")


# -- properties -----------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=300)


@settings(max_examples=150, deadline=None)
@given(sizes, st.data())
def test_inclusion_proofs_verify_and_nothing_else_does(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    index = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(d, index)
    top = root(d)
    assert verify_inclusion(d[index], index, n, proof, top)
    assert not verify_inclusion(leaf_hash(b"other"), index, n, proof, top)
    if proof:
        at, bit = data.draw(st.integers(0, 10_000)), data.draw(st.integers(0, 255))
        assert not verify_inclusion(d[index], index, n, flip(proof, at, bit), top)
        assert not verify_inclusion(d[index], index, n, proof[:-1], top)
    assert not verify_inclusion(d[index], index, n, [*proof, top], top)
    other = data.draw(st.integers(0, n - 1).filter(lambda i: i != index)) if n > 1 else None
    if other is not None:
        assert not verify_inclusion(d[index], other, n, proof, top)
    # Another size, with that tree's own root (the signed head binds size and root together).
    longer = leaves(n + 5)
    wrong = data.draw(st.integers(index + 1, n + 5).filter(lambda s: s != n))
    assert not verify_inclusion(d[index], index, wrong, proof, root(longer[:wrong]))
    assert not verify_inclusion(d[index], index, n, proof, root(d[:-1]) if n > 1 else top[::-1])


@settings(max_examples=150, deadline=None)
@given(sizes, st.data())
def test_consistency_proofs_verify_and_nothing_else_does(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    m = data.draw(st.integers(0, n))
    proof = consistency_proof(d, m)
    old, new = root(d[:m]), root(d)
    assert verify_consistency(m, n, old, new, proof)
    if proof:
        at, bit = data.draw(st.integers(0, 10_000)), data.draw(st.integers(0, 255))
        assert not verify_consistency(m, n, old, new, flip(proof, at, bit))
        assert not verify_consistency(m, n, old, new, proof[:-1])
    if 0 < m < n:
        assert not verify_consistency(m, n, old, new, [*proof, new])
        # Another size, with that tree's own root. (With the same root a proof may pass for a
        # size of the same shape: the signed checkpoint is what binds a size to its root.)
        wrong_m = data.draw(st.integers(1, n).filter(lambda s: s != m))
        assert not verify_consistency(wrong_m, n, root(d[:wrong_m]), new, proof)
        wrong_n = data.draw(st.integers(m + 1, n + 5).filter(lambda s: s != n))
        assert not verify_consistency(m, wrong_n, old, root(leaves(n + 5)[:wrong_n]), proof)
        assert not verify_consistency(m, n, root(d[: m - 1]) if m > 1 else new, new, proof)
        assert not verify_consistency(m, n, old, root(leaves(n, seed=1)), proof)
        # A log that rewrote one old leaf has no proof from the old head.
        forked = [*d[: m - 1], leaf_hash(b"rewritten"), *d[m:]]
        assert not verify_consistency(m, n, old, root(forked), consistency_proof(forked, m))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300), st.data())
def test_frontier_matches_the_tree_and_survives_a_restart(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    restart = data.draw(st.integers(0, n))
    frontier = Frontier()
    for i, leaf in enumerate(d):
        if i == restart:
            saved = frontier.to_json()
            assert len(saved["nodes"]) == bin(i).count("1")  # O(log n): one per set bit
            frontier = Frontier.from_json(saved)
        frontier.append(leaf)
        assert frontier.size == i + 1
        assert frontier.root() == root(d[: i + 1])
    restored = Frontier.from_json(frontier.to_json())
    assert (restored.size, restored.root()) == (n, root(d))


def test_tree_roots_at_every_size() -> None:
    d = leaves(130)
    tree = Tree(d)
    assert [tree.root(n) for n in range(131)] == [root(d[:n]) for n in range(131)]
    assert tree.leaf(7) == d[7]
    assert tree.consistency_proof(40, 100) == consistency_proof(d[:100], 40)
    assert tree.inclusion_proof(3, 50) == inclusion_proof(d[:50], 3)
    with pytest.raises(ValueError, match="outside"):
        tree.root(131)


@pytest.mark.parametrize(
    ("saved", "message"),
    [
        ({"size": 3, "nodes": ["00" * 32]}, "has 2 nodes"),
        ({"size": -1, "nodes": []}, "non-negative"),
        ({"size": True, "nodes": []}, "non-negative"),
        ({"size": 1, "nodes": ["zz"]}, "not hex"),
        ({"size": 1, "nodes": ["00" * 31]}, "32 bytes"),
        ({"size": 1}, "list of hex"),
    ],
)
def test_a_bad_saved_frontier_is_refused(saved: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Frontier.from_json(saved)
