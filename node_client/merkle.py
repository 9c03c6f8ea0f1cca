"""RFC 6962 / RFC 9162 Merkle trees: hashing, an append-only tree with proofs, and the verifiers.

Shared by the gateway (which builds the tree over its release journal and anchors roots on-chain) and
the auditor (which checks that every journal entry is under an anchored root and that successive
anchored roots are consistent). Both sides must agree *bit for bit* with the standard, otherwise a
proof the gateway hands out proves nothing to anybody using another implementation; the tests pin the
Certificate Transparency reference vectors for that reason.

Definitions (RFC 9162 section 2.1.1, identical to RFC 6962 section 2.1)::

    MTH({})       = SHA-256()                                   (EMPTY_ROOT)
    MTH({d0})     = SHA-256(0x00 || d0)                         (leaf_hash)
    MTH(D[n])     = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])) (node_hash)
                    where k is the largest power of two < n

The 0x00 / 0x01 prefixes separate leaves from interior nodes (no second-preimage tricks where an
interior node is passed off as a leaf). The split at the largest power of two (not the midpoint)
makes every left subtree complete and aligned, so a tree of size n is a fixed, append-only structure:
its left parts never change when leaves are added, which is what makes consistency proofs possible.

Complexity of :class:`MerkleTree` (n leaves, all costs in SHA-256 compressions of 65 bytes):

* memory: every complete, aligned subtree hash is kept, level by level, packed 32 bytes per hash in
  one ``bytearray`` per level: n + n/2 + n/4 + ... < 2n hashes, i.e. < 64 bytes per leaf
  (1,000,000 leaves ~ 64 MB, no per-hash Python object);
* ``append``: amortised 1 node hash (a new leaf completes on average one aligned subtree), worst
  case log2(n); ``extend`` does the same work level by level with less interpreter overhead;
* ``root(size)`` for ANY past or current size: size is a sum of powers of two, each the hash of a
  stored complete aligned subtree, so at most popcount(size) - 1 <= log2(n) node hashes; the current
  root is additionally cached until the next append;
* ``inclusion_proof`` / ``consistency_proof``: O(log n) stored-hash lookups plus at most one
  O(log n) fold for the (single) incomplete right-edge subtree the proof needs.

The tree is not itself locked: one thread may append while others read, provided readers only ask
about sizes <= :attr:`MerkleTree.size` they have observed (``size`` is published after all the nodes
an append creates). Callers that need more (the journal does) wrap it in their own lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleTree",
    "NodeSource",
    "consistency_path",
    "inclusion_path",
    "leaf_hash",
    "node_hash",
    "range_hash",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
_sha256 = hashlib.sha256

#: MTH of the empty tree: SHA-256 of the empty string (no prefix).
EMPTY_ROOT: bytes = _sha256(b"").digest()

#: ``node(height, j)``: the hash of the complete aligned subtree over leaves ``[j * 2**height, (j + 1) * 2**height)``
NodeSource = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one leaf (one journal entry's canonical encoding)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an interior node."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2): RFC 6962's split point k."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves, computed without recursion.

    Folds a stack of complete subtrees (the binary counter of the size, like the tree's right edge):
    O(n) hashes, O(log n) memory, same result as the recursive definition.
    """
    if not hashes:
        return EMPTY_ROOT
    stack: list[tuple[int, bytes]] = []  # (height, hash) of complete subtrees, heights decreasing
    for h in hashes:
        height, node = 0, h
        while stack and stack[-1][0] == height:
            node = node_hash(stack.pop()[1], node)
            height += 1
        stack.append((height, node))
    node = stack.pop()[1]
    while stack:
        node = node_hash(stack.pop()[1], node)
    return node


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != HASH_SIZE:
        raise ValueError(f"{name} must be {HASH_SIZE} bytes")


class MerkleTree:
    """Append-only RFC 6962 tree over leaf hashes, answering roots and proofs for any past size.

    ``_levels[h]`` holds, packed, the hashes of all complete aligned subtrees of height ``h``:
    entry ``j`` covers leaves ``[j * 2**h, (j + 1) * 2**h)``. Those nodes never change once written
    (append-only), so every historical tree is a combination of them.
    """

    __slots__ = ("_base", "_levels", "_root_cache", "_size")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        self._base = 0  # leaves before this are known only through the frontier (see from_frontier)
        self._root_cache: tuple[int, bytes] = (0, EMPTY_ROOT)
        for h in leaf_hashes:
            self.append(h)

    # ------------------------------------------------------------------ compact form

    def frontier(self) -> list[bytes]:
        """The roots of the complete aligned subtrees that make up the current tree, left to right
        (one per set bit of ``size``, at most ``log2(size) + 1`` hashes).

        With the size, this is all that is needed to keep going: :meth:`from_frontier` rebuilds a
        tree that gives the same roots (and proofs for later leaves) as this one after the same
        appends. The auditor's checkpoints store it instead of every leaf hash.
        """
        out: list[bytes] = []
        offset = 0
        for height in range(self._size.bit_length() - 1, -1, -1):
            if self._size >> height & 1:
                out.append(self._node(height, offset >> height))
                offset += 1 << height
        return out

    @classmethod
    def from_frontier(cls, size: int, frontier: Sequence[bytes]) -> MerkleTree:
        """A tree of ``size`` leaves known only by its :meth:`frontier`.

        Appending works as usual. Roots of sizes ``>= size``, inclusion proofs of leaves
        ``>= size`` and consistency proofs from sizes ``>= size`` are exact (they only need frontier
        nodes and later ones); anything about the earlier leaves raises ``ValueError``.
        """
        if size < 0 or len(frontier) != bin(size).count("1"):
            raise ValueError(f"a frontier of size {size} has {bin(size).count('1')} hashes, not {len(frontier)}")
        tree = cls()
        tree._levels = [bytearray(HASH_SIZE * (size >> h)) for h in range(max(1, size.bit_length()))]
        offset = 0
        hashes = iter(frontier)
        for height in range(size.bit_length() - 1, -1, -1):
            if size >> height & 1:
                node = next(hashes)
                _check_hash("frontier hash", node)
                j = offset >> height  # the last node of its level: (size >> height) - 1
                tree._levels[height][j * HASH_SIZE : (j + 1) * HASH_SIZE] = node
                offset += 1 << height
        tree._size = tree._base = size
        return tree

    # ------------------------------------------------------------------ building

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._size

    def __len__(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> int:
        """Adds a leaf (its hash, ``leaf_hash(data)``) and returns its index. Amortised O(1)."""
        _check_hash("leaf_hash", leaf_hash)
        index = self._size
        levels = self._levels
        levels[0] += leaf_hash
        node = bytes(leaf_hash)
        height, j = 0, index
        # a new node at (height, j) completes its parent iff it is a right child (j odd)
        while j & 1:
            left = bytes(levels[height][(j - 1) * HASH_SIZE : j * HASH_SIZE])
            node = node_hash(left, node)
            height += 1
            j >>= 1
            if height == len(levels):
                levels.append(bytearray())
            levels[height] += node
        self._size = index + 1  # published last: every node of the new size exists by now
        return index

    def extend(self, leaf_hashes: Iterable[bytes]) -> int:
        """Appends many leaves at once (same result as repeated :meth:`append`); returns the new size.

        Builds level by level over packed bytes, about 3x faster than appending one by one: what
        re-opening a journal of millions of entries spends its time on.
        """
        hashes = list(leaf_hashes)
        for h in hashes:
            _check_hash("leaf_hash", h)
        if not hashes:
            return self._size
        levels = self._levels
        levels[0] += b"".join(hashes)
        height = 0
        while True:
            below = levels[height]
            want = len(below) // (2 * HASH_SIZE)  # complete nodes one level up
            if height + 1 == len(levels):
                if want == 0:
                    break
                levels.append(bytearray())
            above = levels[height + 1]
            have = len(above) // HASH_SIZE
            if have == want:
                break
            pairs = bytes(below[2 * have * HASH_SIZE : 2 * want * HASH_SIZE])
            above += b"".join(
                [_sha256(b"\x01" + pairs[k : k + 2 * HASH_SIZE]).digest() for k in range(0, len(pairs), 2 * HASH_SIZE)]
            )
            height += 1
        self._size = len(levels[0]) // HASH_SIZE  # published last
        return self._size

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        if index < self._base:
            raise ValueError(f"leaf {index} precedes the frontier this tree was built from")
        if not 0 <= index < self._size:
            raise IndexError(f"leaf index {index} out of range for size {self._size}")
        return self._node(0, index)

    # ------------------------------------------------------------------ hashes of ranges

    def _node(self, height: int, j: int) -> bytes:
        """Stored hash of the complete aligned subtree ``(height, j)``."""
        return bytes(self._levels[height][j * HASH_SIZE : (j + 1) * HASH_SIZE])

    def _range_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range that occurs in the RFC recursion (see :func:`range_hash`)."""
        return range_hash(self._node, start, end)

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self._size
        if not 0 <= size <= self._size:
            raise ValueError(f"size {size} out of range: the tree has {self._size} leaves")
        return size

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all). O(log n) for any size."""
        size = self._check_size(size)
        if size == 0:
            return EMPTY_ROOT
        if size < self._base:
            raise ValueError(f"size {size} precedes the frontier this tree was built from ({self._base})")
        cached_size, cached = self._root_cache
        if cached_size == size:
            return cached
        root = self._range_hash(0, size)
        if size == self._size:
            self._root_cache = (size, root)
        return root

    # ------------------------------------------------------------------ proofs

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[size]) of RFC 6962 2.1.1 / RFC 9162 2.1.3.1, leaf to root order."""
        size = self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} not in a tree of size {size}")
        if index < self._base:
            raise ValueError(f"leaf {index} precedes the frontier this tree was built from")
        return inclusion_path(self._node, index, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[new_size]) of RFC 6962 2.1.2 / RFC 9162 2.1.4.1.

        Empty when ``old_size`` is 0 or equal to ``new_size`` (nothing to prove: the verifier then
        checks the roots directly).
        """
        new_size = self._check_size(new_size)
        if not 0 <= old_size <= new_size:
            raise ValueError(f"old size {old_size} not in 0..{new_size}")
        if old_size == 0 or old_size == new_size:
            return []
        if old_size < self._base:
            raise ValueError(f"size {old_size} precedes the frontier this tree was built from ({self._base})")
        return consistency_path(self._node, old_size, new_size)


# ---------------------------------------------------------------------- proofs over any node store


def range_hash(node: NodeSource, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range that occurs in the RFC recursion, from stored aligned subtrees.

    Such a range starts at a multiple of the largest power of two >= its length (it is a left
    part, hence complete and aligned, or a right part ending at some tree size). Its length in
    binary then names stored aligned subtrees ``node(height, j)``, which are folded right to left.
    """
    length = end - start
    if length <= 0:
        raise ValueError("empty range")
    parts: list[bytes] = []
    offset = start
    for height in range(length.bit_length() - 1, -1, -1):
        if length >> height & 1:
            parts.append(node(height, offset >> height))
            offset += 1 << height
    result = parts.pop()
    while parts:
        result = node_hash(parts.pop(), result)
    return result


def inclusion_path(node: NodeSource, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 2.1.3.1), leaf to root, over ``node(height, j)`` lookups.

    Shared by the in-memory tree and the gateway's on-disk one, so both give identical proofs.
    """
    path: list[bytes] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            path.append(range_hash(node, start + k, end))
            end = start + k
        else:
            path.append(range_hash(node, start, start + k))
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_path(node: NodeSource, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) (RFC 9162 2.1.4.1) for ``0 < old_size < new_size``."""
    proof: list[bytes] = []
    start, end, m, whole = 0, new_size, old_size, True
    while True:
        n = end - start
        if m == n:
            if not whole:
                proof.append(range_hash(node, start, end))
            break
        k = _split(n)
        if m <= k:
            proof.append(range_hash(node, start + k, end))
            end = start + k
        else:
            proof.append(range_hash(node, start, start + k))
            start, m, whole = start + k, m - k, False
    proof.reverse()
    return proof


# ---------------------------------------------------------------------- verification


def root_from_inclusion_proof(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 2.1.3.2); ``ValueError`` if malformed.

    Malformed means: index not below size, a hash of the wrong length, or a proof of the wrong
    length for (index, size) - which the algorithm detects by ``sn`` not ending at 0.
    """
    _check_hash("leaf_hash", leaf_hash)
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} not in a tree of size {size}")
    fn, sn = index, size - 1
    r = bytes(leaf_hash)
    for p in proof:
        _check_hash("proof element", p)
        if sn == 0:
            raise ValueError("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("inclusion proof too short")
    return r


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True iff ``proof`` shows the leaf with hash ``leaf_hash`` at ``index`` in the tree ``root`` of ``size``."""
    try:
        _check_hash("root", root)
        return root_from_inclusion_proof(leaf_hash, index, size, proof) == root
    except ValueError:
        return False


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """True iff ``proof`` shows the tree (old_size, old_root) is a prefix of (new_size, new_root).

    RFC 9162 2.1.4.2, plus the trivial cases it leaves to the caller: equal sizes need equal roots
    and an empty proof; old size 0 needs an empty proof and ``old_root == EMPTY_ROOT`` (stricter than
    some libraries, which accept any old root there: a non-empty-tree root for size 0 is a lie).
    """
    try:
        _check_hash("old_root", old_root)
        _check_hash("new_root", new_root)
        for p in proof:
            _check_hash("proof element", p)
    except ValueError:
        return False
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    return _roots_of_consistency_path(old_size, new_size, path) == (old_root, new_root)


def _roots_of_consistency_path(old_size: int, new_size: int, path: list[bytes]) -> tuple[bytes, bytes] | None:
    """RFC 9162 2.1.4.2 from step 3 on: the (old, new) roots a consistency path leads to; ``None`` when the
    path does not fit the sizes."""
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return (fr, sr) if sn == 0 else None
