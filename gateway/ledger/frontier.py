"""The right edge of the journal's Merkle tree: O(log n) hashes instead of the whole tree in memory.

The frontier of a tree of ``size`` leaves is the list of complete aligned subtrees it is made of (one
per set bit of ``size``, largest first). Appending a leaf merges equal-height subtrees; each merge
creates an interior node that never changes again, which the journal stores on disk in the same
transaction as the entry (``nodes`` table), so proofs for any past entry are read from there.
"""

from __future__ import annotations

from node_client.merkle import EMPTY_ROOT, HASH_SIZE, node_hash

__all__ = ["Frontier", "Node", "subtrees"]

#: a complete aligned subtree: ``(height, j, hash)`` covers leaves ``[j * 2**height, (j + 1) * 2**height)``
Node = tuple[int, int, bytes]


def subtrees(size: int) -> list[tuple[int, int]]:
    """``(height, j)`` of the complete subtrees a tree of ``size`` leaves is made of, left to right."""
    out = []
    offset = 0
    for height in range(size.bit_length() - 1, -1, -1):
        if size >> height & 1:
            out.append((height, offset >> height))
            offset += 1 << height
    return out


class Frontier:
    """Size and right-edge subtrees of an append-only RFC 6962 tree (same hashing rules)."""

    __slots__ = ("_stack", "size")

    def __init__(self, size: int = 0, stack: list[tuple[int, bytes]] | None = None) -> None:
        self.size = size
        self._stack: list[tuple[int, bytes]] = list(stack or [])  # (height, hash), heights decreasing

    def copy(self) -> Frontier:
        return Frontier(self.size, self._stack)

    def append(self, leaf: bytes) -> list[Node]:
        """Adds a leaf hash; returns the interior nodes it completed (to store), lowest first."""
        index = self.size
        made: list[Node] = []
        height, node = 0, leaf
        while self._stack and self._stack[-1][0] == height:
            node = node_hash(self._stack.pop()[1], node)
            height += 1
            made.append((height, index >> height, node))
        self._stack.append((height, node))
        self.size = index + 1
        return made

    def nodes(self) -> list[Node]:
        """The frontier as stored nodes ``(height, j, hash)``, left to right."""
        out: list[Node] = []
        offset = 0
        for height, h in self._stack:
            out.append((height, offset >> height, h))
            offset += 1 << height
        return out

    def last_leaf(self) -> bytes | None:
        """The last leaf's hash when it is not yet paired (odd size), else None."""
        return self._stack[-1][1] if self._stack and self._stack[-1][0] == 0 else None

    def root(self) -> bytes:
        """MTH of all ``size`` leaves: the frontier folded right to left."""
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][1]
        for _height, h in reversed(self._stack[:-1]):
            node = node_hash(h, node)
        return node

    def encode(self) -> bytes:
        """The hashes, concatenated (the heights follow from the size)."""
        return b"".join(h for _height, h in self._stack)

    @classmethod
    def decode(cls, size: int, blob: bytes) -> Frontier:
        """Inverse of :meth:`encode`; ``ValueError`` when the blob does not fit the size."""
        heights = [h for h in range(size.bit_length() - 1, -1, -1) if size >> h & 1]
        if len(blob) != HASH_SIZE * len(heights):
            raise ValueError(f"a frontier of size {size} has {len(heights)} hashes")
        hashes = [blob[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i in range(len(heights))]
        return cls(size, list(zip(heights, hashes, strict=True)))
