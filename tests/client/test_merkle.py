"""``node_client.merkle``: RFC 6962 / RFC 9162 known answers, and properties against a naive reference.

The known answers are the Certificate Transparency reference tree (8 leaves) as published in
transparency-dev/merkle (``testonly/constants.go`` for the roots and node hashes,
``proof/verify_test.go`` for the inclusion and consistency proofs; the same values are in
google/certificate-transparency-go and the original C++ CT log). Nothing here was computed by the
code under test.

The properties compare the optimised tree with a deliberately naive transcription of the RFC 6962
section 2.1 definitions (MTH, PATH, PROOF/SUBPROOF) on Python lists.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node_client.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

# ---------------------------------------------------------------------- naive reference (RFC 6962 2.1)


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_mth(leaves: list[bytes]) -> bytes:
    """MTH over leaf hashes, straight from the definition (recursive, O(n))."""
    n = len(leaves)
    if n == 0:
        return _sha(b"")
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return _sha(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:]))


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return ref_path(m, leaves[:k]) + [ref_mth(leaves[k:])]
    return ref_path(m - k, leaves[k:]) + [ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if b else [ref_mth(leaves)]
    k = _k(n)
    if m <= k:
        return ref_subproof(m, leaves[:k], b) + [ref_mth(leaves[k:])]
    return ref_subproof(m - k, leaves[k:], False) + [ref_mth(leaves[:k])]


def ref_proof(m: int, leaves: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) for 0 < m < n (empty otherwise, like the implementation)."""
    if m == 0 or m == len(leaves):
        return []
    return ref_subproof(m, leaves, True)


def leaves_for(n: int, salt: int = 0) -> list[bytes]:
    return [leaf_hash(f"{salt}:{i}".encode()) for i in range(n)]


def flip(h: bytes, bit: int = 3) -> bytes:
    return bytes([h[0] ^ (1 << bit)]) + h[1:]


# ---------------------------------------------------------------------- known answers

CT_LEAVES = [
    bytes.fromhex(x)
    for x in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
]
# root for tree sizes 0..8
CT_ROOTS = [
    bytes.fromhex(x)
    for x in [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]
# complete subtree hashes by level (transparency-dev/merkle testonly.NodeHashes)
CT_NODES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
# (0-based leaf index, tree size, proof)
CT_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (old size, new size, proof)
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


@pytest.fixture(scope="module")
def ct_tree() -> MerkleTree:
    return MerkleTree(leaf_hash(d) for d in CT_LEAVES)


def test_empty_root_and_prefixes() -> None:
    assert CT_ROOTS[0] == EMPTY_ROOT
    assert MerkleTree().root() == EMPTY_ROOT
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert leaf_hash(b"") == CT_ROOTS[1]
    assert node_hash(leaf_hash(b""), leaf_hash(b"\x00")) == CT_ROOTS[2]


def test_ct_roots_for_every_size(ct_tree: MerkleTree) -> None:
    hashes = [leaf_hash(d) for d in CT_LEAVES]
    for n in range(9):
        assert ct_tree.root(n) == CT_ROOTS[n], n
        assert root_from_leaf_hashes(hashes[:n]) == CT_ROOTS[n], n
        assert ref_mth(hashes[:n]) == CT_ROOTS[n], n
    incremental = MerkleTree()
    for n, h in enumerate(hashes, start=1):
        incremental.append(h)
        assert incremental.root() == CT_ROOTS[n]


def test_ct_complete_subtrees(ct_tree: MerkleTree) -> None:
    for height, level in enumerate(CT_NODES):
        for j, expected in enumerate(level):
            assert ct_tree._node(height, j).hex() == expected


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_ct_inclusion_proofs(ct_tree: MerkleTree, index: int, size: int, proof: list[str]) -> None:
    expected = [bytes.fromhex(p) for p in proof]
    assert ct_tree.inclusion_proof(index, size) == expected
    leaf = leaf_hash(CT_LEAVES[index])
    assert root_from_inclusion_proof(leaf, index, size, expected) == CT_ROOTS[size]
    assert verify_inclusion(leaf, index, size, expected, CT_ROOTS[size])
    # the corruptions of transparency-dev/merkle's verifierCheck
    bad: list[tuple[int, int, bytes, list[bytes], bytes]] = [
        (index - 1, size, leaf, expected, CT_ROOTS[size]),
        (index + 1, size, leaf, expected, CT_ROOTS[size]),
        (index ^ 2, size, leaf, expected, CT_ROOTS[size]),
        (index, size * 2, leaf, expected, CT_ROOTS[size]),
        (index, size // 2, leaf, expected, CT_ROOTS[size]),
        (index, size, b"WrongLeaf", expected, CT_ROOTS[size]),
        (index, size, leaf, expected, EMPTY_ROOT),
        (index, size, leaf, expected + [b""], CT_ROOTS[size]),
        (index, size, leaf, expected + [CT_ROOTS[size]], CT_ROOTS[size]),
        (index, size, leaf, [b""] + expected, CT_ROOTS[size]),
        (index, size, leaf, [CT_ROOTS[size]] + expected, CT_ROOTS[size]),
    ]
    for i in range(len(expected)):
        bad.append((index, size, leaf, expected[:i] + [flip(expected[i])] + expected[i + 1 :], CT_ROOTS[size]))
    if expected:
        bad.append((index, size, leaf, expected[:-1], CT_ROOTS[size]))
    for args in bad:
        assert not verify_inclusion(*args), args[:2]


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
def test_ct_consistency_proofs(ct_tree: MerkleTree, old: int, new: int, proof: list[str]) -> None:
    expected = [bytes.fromhex(p) for p in proof]
    assert ct_tree.consistency_proof(old, new) == expected
    r1, r2 = CT_ROOTS[old], CT_ROOTS[new]
    assert verify_consistency(old, new, r1, r2, expected)
    if not expected:
        return
    bad: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (old - 1, new, r1, r2, expected),
        (old + 1, new, r1, r2, expected),
        (old ^ 2, new, r1, r2, expected),
        (old, new * 2, r1, r2, expected),
        (old, new // 2, r1, r2, expected),
        (old, new, b"WrongRoot", r2, expected),
        (old, new, r1, b"WrongRoot", expected),
        (old, new, r2, r1, expected),
        (old, new, r1, r2, []),
        (old, new, r1, r2, expected + [b""]),
        (old, new, r1, r2, expected + [r1]),
        (old, new, r1, r2, expected + [r2]),
        (old, new, r1, r2, [b""] + expected),
        (old, new, r1, r2, [r1] + expected),
        (old, new, r1, r2, [r2] + expected),
        (old, new, r1, r2, [expected[0]] + expected),
        (old, new, r1, r2, expected[:-1]),
    ]
    for i in range(len(expected)):
        bad.append((old, new, r1, r2, expected[:i] + [flip(expected[i], 4)] + expected[i + 1 :]))
    for args in bad:
        assert not verify_consistency(*args), args[:2]


def test_trivial_consistency_cases() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, a, [])
    assert not verify_consistency(0, 5, a, b, [])  # size 0 has exactly one root
    assert verify_consistency(3, 3, a, a, [])
    assert not verify_consistency(3, 3, a, b, [])
    assert not verify_consistency(3, 3, a, a, [EMPTY_ROOT])
    assert not verify_consistency(2, 1, a, b, [])
    assert not verify_consistency(1, 2, a, b, [])
    assert not verify_consistency(-1, 2, a, b, [a])


def test_single_leaf_inclusion_needs_real_hashes() -> None:
    h = leaf_hash(b"data")
    assert verify_inclusion(h, 0, 1, [], h)
    assert not verify_inclusion(b"", 0, 1, [], b"")  # wrong hash size, even if "equal"
    assert not verify_inclusion(h, 0, 1, [], b"")
    for index, size in [(0, 0), (1, 0), (2, 1), (-1, 1)]:
        assert not verify_inclusion(h, index, size, [], h)


def test_argument_checks() -> None:
    tree = MerkleTree(leaves_for(5))
    with pytest.raises(ValueError):
        tree.root(6)
    with pytest.raises(ValueError):
        tree.inclusion_proof(5, 5)
    with pytest.raises(ValueError):
        tree.inclusion_proof(0, 0)
    with pytest.raises(ValueError):
        tree.consistency_proof(4, 3)
    with pytest.raises(ValueError):
        tree.append(b"short")
    with pytest.raises(IndexError):
        tree.leaf(5)
    assert tree.consistency_proof(0, 5) == [] and tree.consistency_proof(5) == []


@pytest.mark.parametrize("n", [1, 2, 3, 255, 256, 257, 511, 512, 513, 1023, 1024, 1025])
def test_power_of_two_boundaries_against_reference(n: int) -> None:
    leaves = leaves_for(n, salt=n)
    tree = MerkleTree(leaves)
    assert tree.root() == ref_mth(leaves)
    for index in sorted({0, 1 % n, n // 2, n - 2 if n > 1 else 0, n - 1}):
        assert tree.inclusion_proof(index) == ref_path(index, leaves)
    for old in sorted({1, n // 2, n - 1, n} - {0}):
        assert tree.consistency_proof(old) == ref_proof(old, leaves)
        assert verify_consistency(old, n, tree.root(old), tree.root(), tree.consistency_proof(old))


# ---------------------------------------------------------------------- properties

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(n=st.integers(1, 300), salt=st.integers(0, 2**32))
def test_past_roots_equal_recomputation(n: int, salt: int) -> None:
    leaves = leaves_for(n, salt)
    tree = MerkleTree()
    for i, h in enumerate(leaves):
        assert tree.append(h) == i
        assert tree.root() == root_from_leaf_hashes(leaves[: i + 1])
    for size in range(n + 1):
        assert tree.root(size) == root_from_leaf_hashes(leaves[:size])
    for size in {0, 1, n // 3, n // 2, n}:
        assert tree.root(size) == ref_mth(leaves[:size])


@PROPS
@given(data=st.data(), n=st.integers(1, 300), salt=st.integers(0, 2**32))
def test_inclusion_proofs(data: st.DataObject, n: int, salt: int) -> None:
    leaves = leaves_for(n, salt)
    tree = MerkleTree(leaves)
    size = data.draw(st.integers(1, n), label="size")
    root = tree.root(size)
    # every leaf of that tree proves
    for index in range(size):
        assert verify_inclusion(leaves[index], index, size, tree.inclusion_proof(index, size), root)
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = tree.inclusion_proof(index, size)
    assert proof == ref_path(index, leaves[:size])  # byte for byte the RFC's PATH
    assert root_from_inclusion_proof(leaves[index], index, size, proof) == root
    # and nothing else does
    for other in {index - 1, index + 1, index ^ 1, index ^ 2} - {index}:
        if 0 <= other < size:
            assert not verify_inclusion(leaves[index], other, size, proof, root)
            assert not verify_inclusion(leaves[other], index, size, proof, root)
    assert not verify_inclusion(leaf_hash(b"not in the tree"), index, size, proof, root)
    for i in range(len(proof)):
        tampered = proof[:i] + [flip(proof[i], data.draw(st.integers(0, 7)))] + proof[i + 1 :]
        assert not verify_inclusion(leaves[index], index, size, tampered, root)
    assert not verify_inclusion(leaves[index], index, size, proof + [root], root)
    if proof:
        assert not verify_inclusion(leaves[index], index, size, proof[:-1], root)
    if size < n:  # a proof for one size does not pass for another
        assert not verify_inclusion(leaves[index], index, n, proof, tree.root(n))


@PROPS
@given(data=st.data(), n=st.integers(1, 300), salt=st.integers(0, 2**32))
def test_consistency_proofs(data: st.DataObject, n: int, salt: int) -> None:
    leaves = leaves_for(n, salt)
    tree = MerkleTree(leaves)
    new = data.draw(st.integers(1, n), label="new")
    old = data.draw(st.integers(0, new), label="old")
    proof = tree.consistency_proof(old, new)
    assert proof == ref_proof(old, leaves[:new])  # byte for byte the RFC's PROOF
    r_old, r_new = tree.root(old), tree.root(new)
    assert verify_consistency(old, new, r_old, r_new, proof)
    if 0 < old < new:
        assert proof
        for i in range(len(proof)):
            tampered = proof[:i] + [flip(proof[i], data.draw(st.integers(0, 7)))] + proof[i + 1 :]
            assert not verify_consistency(old, new, r_old, r_new, tampered)
        assert not verify_consistency(old, new, r_old, r_new, proof[:-1])
        assert not verify_consistency(old, new, r_old, r_new, proof + [r_new])
        assert not verify_consistency(old, new, r_new, r_old, proof)
        assert not verify_consistency(old, new, flip(r_old), r_new, proof)
        assert not verify_consistency(old, new, r_old, flip(r_new), proof)
        for wrong_old in {old - 1, old + 1} - {0, new}:
            assert not verify_consistency(wrong_old, new, r_old, r_new, proof)
        # a forked log: same old prefix, different later leaf -> old proof does not bridge to it
        forked = MerkleTree(leaves[:old] + [leaf_hash(b"fork")] + leaves[old + 1 : new])
        assert not verify_consistency(old, new, r_old, forked.root(), proof)
        # a rewritten history: the new tree changed an old leaf
        rewritten = MerkleTree([leaf_hash(b"rewritten")] + leaves[1:new])
        assert not verify_consistency(old, new, r_old, rewritten.root(), rewritten.consistency_proof(old, new))


@PROPS
@given(chunks=st.lists(st.integers(0, 70), min_size=1, max_size=8), salt=st.integers(0, 2**32))
def test_extend_equals_appending_one_by_one(chunks: list[int], salt: int) -> None:
    leaves = leaves_for(sum(chunks), salt)
    one_by_one = MerkleTree(leaves)
    bulk = MerkleTree()
    at = 0
    for n in chunks:
        assert bulk.extend(leaves[at : at + n]) == at + n
        at += n
        assert bulk.root() == one_by_one.root(at)
    assert [bytes(level) for level in bulk._levels if level] == [bytes(level) for level in one_by_one._levels if level]
    assert bulk.size == one_by_one.size
    for size in range(bulk.size + 1):
        assert bulk.root(size) == one_by_one.root(size)
    with pytest.raises(ValueError):
        bulk.extend([leaf_hash(b"ok"), b"short"])
    assert bulk.size == one_by_one.size  # nothing added by a refused extend
    extra = leaf_hash(b"after")
    bulk.append(extra)
    one_by_one.append(extra)
    assert bulk.root() == one_by_one.root()


def test_tree_from_frontier_continues_like_the_full_tree() -> None:
    """A checkpoint keeps only the frontier: appending to it gives the full tree's later roots and proofs."""
    import os
    import random

    rnd = random.Random(7)
    for _ in range(60):
        n, extra = rnd.randrange(0, 70), rnd.randrange(0, 70)
        leaves = [os.urandom(32) for _ in range(n + extra)]
        full = MerkleTree()
        full.extend(leaves)
        prefix = MerkleTree()
        prefix.extend(leaves[:n])
        resumed = MerkleTree.from_frontier(n, prefix.frontier())
        resumed.extend(leaves[n:])
        for size in range(max(n, 1), n + extra + 1):
            assert resumed.root(size) == full.root(size)
            assert resumed.consistency_proof(n, size) == full.consistency_proof(n, size)
        for i in range(n, n + extra):
            assert resumed.inclusion_proof(i) == full.inclusion_proof(i)
        if n:
            with pytest.raises(ValueError):
                resumed.inclusion_proof(n - 1)
    with pytest.raises(ValueError):
        MerkleTree.from_frontier(3, [b"\x00" * 32])
