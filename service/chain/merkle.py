"""RFC 6962 / RFC 9162 Merkle trees: roots, inclusion and consistency proofs.

The ledger and every audit chain are, besides hash chains, Merkle trees over their
records in order. A leaf is hashed ``SHA-256(0x00 || leaf)`` and an interior node
``SHA-256(0x01 || left || right)``; a tree of ``n`` leaves splits at the largest power of
two below ``n`` (RFC 6962 section 2.1), and the empty tree's root is ``SHA-256("")``.

* :class:`Frontier` keeps only the roots of the perfect subtrees along the tree's right
  edge (at most ``log2(n)`` hashes), so a writer extends the root in O(log n) per
  append and can store it beside a checkpoint;
* :class:`MerkleTree` keeps every level, so proofs of any older size cost O(log² n);
* :func:`verify_inclusion` and :func:`verify_consistency` are the RFC 9162 section 2.1.3.2
  and 2.1.4.2 algorithms and raise :class:`~service.chain.errors.ProofError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from service.chain.errors import ProofError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


def leaf_hash(leaf: bytes) -> bytes:
    """Return the RFC 6962 hash of a leaf: ``SHA-256(0x00 || leaf)``."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 hash of an interior node: ``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


@dataclass(frozen=True)
class Frontier:
    """The right edge of a tree: the roots of its perfect subtrees, largest first.

    Attributes:
        size: the number of leaves.
        hashes: one hash per set bit of ``size``, from the most significant bit down.
    """

    size: int = 0
    hashes: tuple[bytes, ...] = ()

    def append(self, leaf: bytes) -> Frontier:
        """Return the frontier with one more leaf hash (O(log n))."""
        hashes = [*self.hashes, leaf]
        size = self.size + 1
        carry = self.size
        while carry & 1:  # each trailing 1 bit of the old size merges two subtrees
            right = hashes.pop()
            hashes[-1] = node_hash(hashes[-1], right)
            carry >>= 1
        return Frontier(size, tuple(hashes))

    def root(self) -> bytes:
        """Return the root of the tree (the empty tree's for size 0)."""
        if not self.hashes:
            return EMPTY_ROOT
        root = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            root = node_hash(left, root)
        return root

    def to_text(self) -> str:
        """Return ``<size>`` and the hex hashes, space-separated (how it is stored)."""
        return " ".join([str(self.size), *(h.hex() for h in self.hashes)])

    @classmethod
    def from_text(cls, text: str) -> Frontier:
        """Parse :meth:`to_text`'s form.

        Raises:
            ProofError: the text is not a frontier (wrong count or malformed hash).
        """
        parts = text.split()
        try:
            size = int(parts[0])
            hashes = tuple(bytes.fromhex(h) for h in parts[1:])
        except (IndexError, ValueError):
            raise ProofError(f"malformed tree frontier {text[:80]!r}") from None
        if size < 0 or len(hashes) != size.bit_count() or any(len(h) != HASH_SIZE for h in hashes):
            raise ProofError(f"tree frontier of size {size} has the wrong hashes")
        return cls(size, hashes)

    @classmethod
    def of(cls, leaves: Iterable[bytes]) -> Frontier:
        """Build the frontier of the given leaf hashes."""
        frontier = cls()
        for leaf in leaves:
            frontier = frontier.append(leaf)
        return frontier


class MerkleTree:
    """A Merkle tree of leaf hashes with every level kept, for proofs at any size.

    ``levels[k][i]`` is the root of the perfect subtree of leaves ``[i*2^k, (i+1)*2^k)``.
    """

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        """The number of leaves."""
        return len(self._levels[0])

    def leaf(self, index: int) -> bytes:
        """The hash of leaf ``index``."""
        return self._levels[0][index]

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash."""
        levels = self._levels
        levels[0].append(leaf)
        level = 0
        while len(levels[level]) % 2 == 0:
            if len(levels) == level + 1:
                levels.append([])
            below = levels[level]
            levels[level + 1].append(node_hash(below[-2], below[-1]))
            level += 1

    def _hash(self, start: int, end: int) -> bytes:
        """MTH of leaves ``[start, end)`` (``end > start``)."""
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:
            level = n.bit_length() - 1
            return self._levels[level][start >> level]
        k = _split(n)
        return node_hash(self._hash(start, start + k), self._hash(start + k, end))

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ProofError(f"tree size {size} is outside 0..{self.size}")

    def root(self, size: int | None = None) -> bytes:
        """The root of the first ``size`` leaves (default: all).

        Raises:
            ProofError: ``size`` exceeds the tree.
        """
        size = self.size if size is None else size
        self._check_size(size)
        return EMPTY_ROOT if size == 0 else self._hash(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

        Raises:
            ProofError: ``index`` is not below ``size`` or ``size`` exceeds the tree.
        """
        self._check_size(size)
        if not 0 <= index < size:
            raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
        proof: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                proof.append(self._hash(start + k, end))
                end = start + k
            else:
                proof.append(self._hash(start, start + k))
                start += k
        proof.reverse()
        return proof

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """The RFC 9162 consistency proof from the tree of ``old`` leaves to ``new``.

        Raises:
            ProofError: not ``0 <= old <= new <= size``.
        """
        self._check_size(new)
        if not 0 <= old <= new:
            raise ProofError(f"no consistency proof from size {old} to size {new}")
        if old in (0, new):
            return []
        proof: list[bytes] = []
        start, end, m, whole = 0, new, old, True
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                proof.append(self._hash(start + k, end))
                end = start + k
            else:
                proof.append(self._hash(start, start + k))
                start, m, whole = start + k, m - k, False
        if not whole:
            proof.append(self._hash(start, end))
        proof.reverse()
        return proof


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """Recompute the root from an inclusion proof (RFC 9162 section 2.1.3.2).

    Raises:
        ProofError: the proof has the wrong length for ``index`` and ``size``.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    fn, sn, root = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            root = node_hash(sibling, root)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            root = node_hash(root, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return root


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` (a leaf hash) is leaf ``index`` of the tree ``(size, root)``.

    Raises:
        ProofError: the proof does not lead to ``root``.
    """
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError(f"inclusion proof of leaf {index} in tree size {size} does not verify")


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree ``(old, old_root)`` is a prefix of ``(new, new_root)``.

    RFC 9162 section 2.1.4.2; trees of equal size must have equal roots, and the empty
    tree is a prefix of every tree.

    Raises:
        ProofError: the proof does not show the old tree to be a prefix of the new one.
    """
    if not 0 <= old <= new:
        raise ProofError(f"tree size {new} is smaller than {old}: the log went back")
    if old == new:
        if proof or old_root != new_root:
            raise ProofError(f"two trees of size {old} with different roots: the log forked")
        return
    if old == 0:
        if proof:
            raise ProofError("a consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("empty consistency proof")
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, node)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or fr != old_root or sr != new_root:
        raise ProofError(
            f"consistency proof from tree size {old} to {new} does not verify: the newer "
            "tree does not extend the older one"
        )
