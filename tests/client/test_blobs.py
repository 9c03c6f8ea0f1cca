"""``node_client.blobs`` (CID locators, the local store layout) and the release constants of ``node_client.hpke``."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from node_client import hpke
from node_client.blobs import (
    CODEC_DAG_PB,
    InvalidCid,
    cid_from_str,
    cid_to_str,
    cid_v1_raw,
    local_blob_path,
    sha256_of_cid,
    shard_of,
    validate_cid,
)

EMPTY = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"  # `ipfs add --cid-version 1 --raw-leaves` of b""


def test_known_cid_and_round_trip() -> None:
    cid = cid_v1_raw(b"")
    assert cid_to_str(cid) == EMPTY
    assert cid_from_str(EMPTY) == cid
    assert sha256_of_cid(cid) == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    dag = bytes([1, CODEC_DAG_PB]) + cid[2:]
    assert cid_from_str(cid_to_str(dag)) == dag


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x00" * 36, b"\x01\x71\x12\x20" + b"\x00" * 32, b"\x01\x55\x13\x20" + b"\x00" * 32, "not bytes", None],
)
def test_invalid_cids_are_refused(bad: object) -> None:
    with pytest.raises(InvalidCid):
        validate_cid(bad)
    assert issubclass(InvalidCid, ValueError)


@pytest.mark.parametrize(
    "text",
    [
        EMPTY.upper(),
        EMPTY + "=",
        "../" + EMPTY[3:],
        "/ipfs/" + EMPTY,
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
        "",
    ],
)
def test_only_the_canonical_string_parses(text: str) -> None:
    with pytest.raises(InvalidCid):
        cid_from_str(text)


def test_non_canonical_trailing_bits_are_refused() -> None:
    raw = cid_v1_raw(b"x")
    body = base64.b32encode(raw).decode().rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    other = body[:-1] + alphabet[alphabet.index(body[-1]) ^ 1]  # the last character carries 3 padding bits
    with pytest.raises(InvalidCid):
        cid_from_str("b" + other.lower())


def test_local_layout_is_next_to_last_two_characters() -> None:
    cid = cid_v1_raw(b"")
    assert shard_of(EMPTY) == "yk"
    assert local_blob_path(Path("/store"), cid) == Path("/store/yk") / EMPTY
    with pytest.raises(InvalidCid):
        local_blob_path(Path("/store"), b"../../etc/passwd")


def test_release_info_and_aad() -> None:
    assert hpke.RELEASE_INFO == b"HealthCode Ledger release v1"
    record = bytes(range(32))
    requester = "0x" + "ab" * 20
    assert hpke.release_aad(record, requester) == record + bytes.fromhex("ab" * 20)
    sk, pk = hpke.generate_keypair()
    enc, ct = hpke.seal(pk, b"fhir", info=hpke.RELEASE_INFO, aad=hpke.release_aad(record, requester))
    assert hpke.open_sealed(sk, enc, ct, info=hpke.RELEASE_INFO, aad=hpke.release_aad(record, requester)) == b"fhir"
    with pytest.raises(hpke.HpkeError):
        hpke.open_sealed(sk, enc, ct, info=hpke.RELEASE_INFO, aad=hpke.release_aad(record, "0x" + "cd" * 20))
