"""Property-based tests (Hypothesis) of the pure parts; the chain state machines are in
``tests/contracts/test_state_machines.py``.

* Merkle trees (node_client.merkle) against a straightforward, independent RFC 6962 section 2.1
  reference written here: MTH, PATH (inclusion) and PROOF (consistency), recursive as in the RFC text.
* The health-code codec (node_client.healthcode): encode/decode round trip; any single-byte corruption of
  the payload, and any single-character change of the text, is detected.
* The release journal (gateway.ledger.journal) of node_client's journal entries: append/read round trip and
  Merkle root (against the reference above); a changed, swapped or deleted row breaks the hash chain and is
  detected on open.

``derandomize`` makes every run explore the same examples (deterministic CI).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.ledger.journal import Journal, JournalCorrupt
from node_client import healthcode, merkle, signing
from node_client.journal_entry import JournalEntry
from node_client.keys import dev_account

FAST = settings(max_examples=200, deadline=None, derandomize=True)


# ================================================================ Merkle: an independent RFC 6962 reference


def ref_mth(d: list[bytes]) -> bytes:
    """RFC 6962 2.1: MTH over the data list (leaf *data*, not hashes)."""
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1: PATH(m, D[n])."""
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.2: PROOF(m, D[n]) = SUBPROOF(m, D[n], true)."""

    def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if b else [ref_mth(d)]
        k = _k(n)
        if m <= k:
            return subproof(m, d[:k], b) + [ref_mth(d[k:])]
        return subproof(m - k, d[k:], False) + [ref_mth(d[:k])]

    return subproof(m, d, True)


leaves = st.lists(st.binary(max_size=12), min_size=1, max_size=70)


def _tree(data: list[bytes]) -> merkle.MerkleTree:
    return merkle.MerkleTree(merkle.leaf_hash(x) for x in data)


@FAST
@given(data=st.lists(st.binary(max_size=12), max_size=70))
def test_merkle_root_matches_rfc6962_for_every_prefix(data: list[bytes]) -> None:
    tree = _tree(data)
    for n in range(len(data) + 1):
        assert tree.root(n) == ref_mth(data[:n])
    assert merkle.root_from_leaf_hashes([merkle.leaf_hash(x) for x in data]) == ref_mth(data)


@FAST
@given(data=leaves, pick=st.data())
def test_merkle_inclusion_proof_is_rfc6962_path_and_verifies(data: list[bytes], pick: st.DataObject) -> None:
    tree = _tree(data)
    n = pick.draw(st.integers(1, len(data)), label="size")
    m = pick.draw(st.integers(0, n - 1), label="index")
    proof = tree.inclusion_proof(m, n)
    assert proof == ref_path(m, data[:n])
    root = ref_mth(data[:n])
    leaf = merkle.leaf_hash(data[m])
    assert merkle.verify_inclusion(leaf, m, n, proof, root)
    # any change makes it fail: another leaf, index, size, or a flipped bit in any proof element
    assert not merkle.verify_inclusion(merkle.leaf_hash(data[m] + b"x"), m, n, proof, root)
    if n > 1 and len(set(data[:n])) == n:
        assert not merkle.verify_inclusion(leaf, (m + 1) % n, n, proof, root)
    if proof:
        i = pick.draw(st.integers(0, len(proof) - 1), label="element")
        bit = pick.draw(st.integers(0, 255), label="bit")
        bad = list(proof)
        bad[i] = bytes(b ^ (1 << (bit % 8)) if j == bit // 8 else b for j, b in enumerate(bad[i]))
        assert not merkle.verify_inclusion(leaf, m, n, bad, root)
        assert not merkle.verify_inclusion(leaf, m, n, proof[:-1], root)
    assert not merkle.verify_inclusion(leaf, m, n, [*proof, b"\x00" * 32], root)


@FAST
@given(data=leaves, pick=st.data())
def test_merkle_consistency_proof_is_rfc6962_proof_and_verifies(data: list[bytes], pick: st.DataObject) -> None:
    tree = _tree(data)
    n = pick.draw(st.integers(1, len(data)), label="new size")
    m = pick.draw(st.integers(1, n), label="old size")
    proof = tree.consistency_proof(m, n)
    if m < n:
        assert proof == ref_proof(m, data[:n])
    else:
        assert proof == []
    old, new = ref_mth(data[:m]), ref_mth(data[:n])
    assert merkle.verify_consistency(m, n, old, new, proof)
    if m < n:
        # a fork (different old leaves) or a flipped bit is not consistent
        forked = ref_mth([*data[: m - 1], data[m - 1] + b"fork"])
        assert not merkle.verify_consistency(m, n, forked, new, proof)
        i = pick.draw(st.integers(0, len(proof) - 1), label="element") if proof else None
        if i is not None:
            bad = list(proof)
            bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
            assert not merkle.verify_consistency(m, n, old, new, bad)


# ================================================================ health-code codec


ADDRESSES = [dev_account(i).address for i in (4, 5, 6, 7, 10, 11, 12)]
SIGNERS = [dev_account(i) for i in (10, 11, 16)]


@st.composite
def signed_codes(draw: st.DrawFn) -> tuple[signing.SignedMessage, signing.Domain]:
    domain = signing.Domain(
        chain_id=draw(st.integers(0, 2**64 - 1)), verifying_contract=draw(st.sampled_from(ADDRESSES))
    )
    signer: LocalAccount = draw(st.sampled_from(SIGNERS))
    patient = draw(st.sampled_from([signer.address, *ADDRESSES]))
    grantee = draw(st.sampled_from(ADDRESSES))
    nonce = draw(st.integers(0, 2**64 - 1))
    deadline = draw(st.integers(0, 2**40 - 1))
    if draw(st.booleans()):
        message: signing.ConsentGrant | signing.ConsentRevoke = signing.ConsentGrant(
            patient=patient,
            grantee=grantee,
            categories=draw(st.integers(0, 2**16 - 1)),
            purposes=draw(st.integers(0, 255)),
            valid_from=draw(st.integers(0, 2**40 - 1)),
            valid_until=draw(st.integers(0, 2**40 - 1)),
            nonce=nonce,
            deadline=deadline,
        )
    else:
        message = signing.ConsentRevoke(patient=patient, grantee=grantee, nonce=nonce, deadline=deadline)
    return signing.sign(signer, domain, message), domain


@FAST
@given(code=signed_codes())
def test_health_code_round_trip(code: tuple[signing.SignedMessage, signing.Domain]) -> None:
    signed, domain = code
    text = healthcode.encode(signed, domain)
    assert text.startswith(healthcode.PREFIX)
    decoded = healthcode.decode(text)
    back, back_domain = decoded.signed, decoded.domain
    assert back == signed and back_domain == domain
    signing.verify(back_domain, back)  # still the signer's signature


@FAST
@given(code=signed_codes(), pick=st.data())
def test_health_code_single_byte_corruption_is_detected(
    code: tuple[signing.SignedMessage, signing.Domain], pick: st.DataObject
) -> None:
    import base45

    text = healthcode.encode(*code)
    raw = bytearray(base45.b45decode(text[len(healthcode.PREFIX) :]))
    i = pick.draw(st.integers(0, len(raw) - 1), label="byte")
    raw[i] ^= pick.draw(st.integers(1, 255), label="xor")
    with pytest.raises(healthcode.HealthCodeError):
        healthcode.decode(healthcode.PREFIX + base45.b45encode(bytes(raw)).decode())


B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


@FAST
@given(code=signed_codes(), pick=st.data())
def test_health_code_single_character_change_is_detected(
    code: tuple[signing.SignedMessage, signing.Domain], pick: st.DataObject
) -> None:
    text = healthcode.encode(*code)
    i = pick.draw(st.integers(len(healthcode.PREFIX), len(text) - 1), label="position")
    c = pick.draw(st.sampled_from([c for c in B45 if c != text[i]]), label="character")
    changed = text[:i] + c + text[i + 1 :]
    assume(changed.strip() == changed)  # a space at either end is trimmed: not a change of the payload
    with pytest.raises(healthcode.HealthCodeError):
        healthcode.decode(changed)


# ================================================================ journal


ACCOUNTS = [dev_account(i).address for i in range(4, 12)]


@st.composite
def journal_entries(draw: st.DrawFn) -> JournalEntry:
    return JournalEntry(
        requester=draw(st.sampled_from(ACCOUNTS)),
        patient=draw(st.sampled_from(ACCOUNTS)),
        record_id=draw(st.binary(min_size=32, max_size=32)),
        purpose=draw(st.integers(0, 255)),
        consent_id=draw(st.binary(min_size=32, max_size=32)),
        emergency=draw(st.booleans()),
        access_hash=draw(st.binary(min_size=32, max_size=32)),
        released_at=draw(st.integers(0, 2**64 - 1)),
    )


@pytest.fixture
def journal_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def _fresh(base: Path) -> Path:
    import uuid

    return base / f"journal-{uuid.uuid4().hex}.db"


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(journal_entries(), min_size=1, max_size=20))
def test_journal_append_read_round_trip(journal_dir: Path, entries: list[JournalEntry]) -> None:
    path = _fresh(journal_dir)
    with Journal(path) as j:
        indexes = [j.append(e) for e in entries[: len(entries) // 2]] + j.append_many(entries[len(entries) // 2 :])
        assert indexes == list(range(len(entries)))
        assert [e for _, e, _ in j.entries()] == entries
        assert j.root() == ref_mth([e.to_bytes() for e in entries])
        j.verify_chain()
    with Journal(path) as again:  # re-opened from disk: same entries, same root
        assert [e for _, e, _ in again.entries()] == entries
        assert again.root() == ref_mth([e.to_bytes() for e in entries])


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(journal_entries(), min_size=2, max_size=12), pick=st.data())
def test_journal_tampering_breaks_the_hash_chain(
    journal_dir: Path, entries: list[JournalEntry], pick: st.DataObject
) -> None:
    path = _fresh(journal_dir)
    with Journal(path) as j:
        j.append_many(entries)
    victim = pick.draw(st.integers(0, len(entries) - 1), label="row")
    how = pick.draw(st.sampled_from(["flip-entry", "rehash-entry", "swap", "delete", "chain"]), label="tamper")
    conn = sqlite3.connect(path)
    with conn:
        (blob,) = conn.execute("SELECT entry FROM entries WHERE idx = ?", (victim,)).fetchone()
        if how == "flip-entry":  # a byte of the entry changed, hashes left alone
            i = pick.draw(st.integers(0, len(blob) - 1), label="byte")
            changed = bytes(b ^ 1 if k == i else b for k, b in enumerate(blob))
            conn.execute("UPDATE entries SET entry = ? WHERE idx = ?", (changed, victim))
        elif how == "rehash-entry":  # the entry replaced and its leaf hash recomputed: the chain breaks
            other = entries[(victim + 1) % len(entries)].to_bytes()
            assume(other != blob)
            conn.execute(
                "UPDATE entries SET entry = ?, leaf_hash = ? WHERE idx = ?", (other, merkle.leaf_hash(other), victim)
            )
        elif how == "swap":  # two rows exchanged, each with its own hashes
            other_idx = (victim + 1) % len(entries)
            rows = {
                i: conn.execute("SELECT entry, leaf_hash, chain_hash FROM entries WHERE idx = ?", (i,)).fetchone()
                for i in (victim, other_idx)
            }
            assume(rows[victim][0] != rows[other_idx][0])
            for a, b in ((victim, other_idx), (other_idx, victim)):
                conn.execute("UPDATE entries SET entry = ?, leaf_hash = ?, chain_hash = ? WHERE idx = ?", (*rows[b], a))
        elif how == "delete":
            assume(victim < len(entries) - 1)  # deleting the last row is truncation: caught by the anchors
            conn.execute("DELETE FROM entries WHERE idx = ?", (victim,))
        else:
            conn.execute("UPDATE entries SET chain_hash = ? WHERE idx = ?", (b"\x00" * 32, victim))
    conn.close()
    with pytest.raises(JournalCorrupt):
        Journal(path).close()
