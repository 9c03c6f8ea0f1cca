"""Record encryption at rest (gateway.storage.crypto) and HPKE release encryption (node_client.hpke)."""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyhpke import KEMKeyPair

from gateway.storage.crypto import (
    DATA_KEY_SIZE,
    WRAPPED_KEY_SIZE,
    GatewayCryptoError,
    IntegrityError,
    InvalidInput,
    Kek,
    KeyFileError,
    WrongKek,
    decrypt_record,
    encrypt_record,
    normalise_patient,
    rewrap,
    wrapped_key_id,
)
from node_client import hpke
from node_client._exceptions import NodeClientError

RID = hashlib.sha256(b"record-1").digest()
RID2 = hashlib.sha256(b"record-2").digest()
PATIENT = "0x" + "ab" * 20
PATIENT2 = "0x" + "cd" * 20
CAT = 3
PT = b'{"resourceType":"Observation","status":"final"}'


def _flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


# ----------------------------------------------------------------------------------------------
# encrypt_record / decrypt_record
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("plaintext", [b"", b"x", PT, os.urandom(1 << 20)], ids=["empty", "1B", "fhir", "1MiB"])
def test_round_trip(plaintext: bytes) -> None:
    ct, key = encrypt_record(plaintext, record_id=RID, patient=PATIENT, category=CAT)
    assert len(key) == DATA_KEY_SIZE
    assert ct[:4] == b"HCL1"
    assert len(ct) == 4 + 12 + len(plaintext) + 16
    assert decrypt_record(ct, key, record_id=RID, patient=PATIENT, category=CAT) == plaintext


def test_fresh_key_and_nonce_every_time() -> None:
    a_ct, a_key = encrypt_record(PT, record_id=RID, patient=PATIENT, category=CAT)
    b_ct, b_key = encrypt_record(PT, record_id=RID, patient=PATIENT, category=CAT)
    assert a_key != b_key
    assert a_ct[4:16] != b_ct[4:16]
    assert a_ct != b_ct


def test_patient_address_case_is_normalised() -> None:
    mixed = "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"
    ct, key = encrypt_record(PT, record_id=RID, patient=mixed, category=CAT)
    assert decrypt_record(ct, key, record_id=RID, patient=mixed.lower(), category=CAT) == PT
    assert decrypt_record(ct, key, record_id=RID, patient=mixed[2:].upper(), category=CAT) == PT
    assert normalise_patient(mixed) == bytes.fromhex(mixed[2:])


@pytest.mark.parametrize(
    "override",
    [{"record_id": RID2}, {"patient": PATIENT2}, {"category": CAT + 1}, {"category": 0}],
    ids=["other-record", "other-patient", "other-category", "category-0"],
)
def test_aad_binds_record_patient_category(override: dict[str, object]) -> None:
    ct, key = encrypt_record(PT, record_id=RID, patient=PATIENT, category=CAT)
    args: dict[str, object] = {"record_id": RID, "patient": PATIENT, "category": CAT, **override}
    with pytest.raises(IntegrityError):
        decrypt_record(ct, key, **args)  # type: ignore[arg-type]


def test_wrong_data_key_fails() -> None:
    ct, key = encrypt_record(PT, record_id=RID, patient=PATIENT, category=CAT)
    with pytest.raises(IntegrityError):
        decrypt_record(ct, _flip(key, 0), record_id=RID, patient=PATIENT, category=CAT)
    _, other_key = encrypt_record(PT, record_id=RID, patient=PATIENT, category=CAT)
    with pytest.raises(IntegrityError):
        decrypt_record(ct, other_key, record_id=RID, patient=PATIENT, category=CAT)


def test_every_tampered_byte_fails() -> None:
    ct, key = encrypt_record(PT, record_id=RID, patient=PATIENT, category=CAT)
    for i in range(len(ct)):  # header magic, nonce, body and tag alike
        for mask in (0x01, 0x80):
            with pytest.raises(IntegrityError):
                decrypt_record(_flip(ct, i, mask), key, record_id=RID, patient=PATIENT, category=CAT)


def test_every_truncation_and_extension_fails() -> None:
    ct, key = encrypt_record(PT, record_id=RID, patient=PATIENT, category=CAT)
    for n in range(len(ct)):
        with pytest.raises(IntegrityError):
            decrypt_record(ct[:n], key, record_id=RID, patient=PATIENT, category=CAT)
    with pytest.raises(IntegrityError):
        decrypt_record(ct + b"\0", key, record_id=RID, patient=PATIENT, category=CAT)


def test_unknown_version_header_fails() -> None:
    ct, key = encrypt_record(PT, record_id=RID, patient=PATIENT, category=CAT)
    with pytest.raises(IntegrityError, match="format"):
        decrypt_record(b"HCL2" + ct[4:], key, record_id=RID, patient=PATIENT, category=CAT)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"record_id": RID[:31]},
        {"record_id": "00" * 32},
        {"patient": "0x1234"},
        {"patient": "0x" + "zz" * 20},
        {"patient": b"\xab" * 20},
        {"category": 256},
        {"category": -1},
        {"category": True},
    ],
)
def test_malformed_arguments_are_invalid_input(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"record_id": RID, "patient": PATIENT, "category": CAT, **kwargs}
    with pytest.raises(InvalidInput):
        encrypt_record(PT, **args)  # type: ignore[arg-type]
    ct, key = encrypt_record(PT, record_id=RID, patient=PATIENT, category=CAT)
    with pytest.raises(InvalidInput):
        decrypt_record(ct, key, **args)  # type: ignore[arg-type]


def test_bad_data_key_size_is_invalid_input() -> None:
    ct, key = encrypt_record(PT, record_id=RID, patient=PATIENT, category=CAT)
    with pytest.raises(InvalidInput):
        decrypt_record(ct, key[:16], record_id=RID, patient=PATIENT, category=CAT)


def test_error_hierarchy() -> None:
    assert issubclass(IntegrityError, GatewayCryptoError)
    assert issubclass(WrongKek, IntegrityError)
    assert issubclass(InvalidInput, GatewayCryptoError)
    assert issubclass(KeyFileError, GatewayCryptoError)


_addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plaintext=st.binary(max_size=4096),
    record_id=st.binary(min_size=32, max_size=32),
    patient=_addresses,
    category=st.integers(min_value=0, max_value=255),
)
def test_round_trip_property(plaintext: bytes, record_id: bytes, patient: str, category: int) -> None:
    ct, key = encrypt_record(plaintext, record_id=record_id, patient=patient, category=category)
    assert (
        decrypt_record(ct, key, record_id=record_id, patient=patient.upper().replace("0X", "0x"), category=category)
        == plaintext
    )


@settings(max_examples=200, deadline=None)
@given(plaintext=st.binary(max_size=256), data=st.data())
def test_any_bit_flip_fails_property(plaintext: bytes, data: st.DataObject) -> None:
    ct, key = encrypt_record(plaintext, record_id=RID, patient=PATIENT, category=CAT)
    index = data.draw(st.integers(min_value=0, max_value=len(ct) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    with pytest.raises(IntegrityError):
        decrypt_record(_flip(ct, index, 1 << bit), key, record_id=RID, patient=PATIENT, category=CAT)


# ----------------------------------------------------------------------------------------------
# Kek: key file
# ----------------------------------------------------------------------------------------------


def test_generate_writes_0600_hex_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    kek = Kek.generate(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert len(text.strip()) == 64 and int(text, 16) >= 0
    loaded = Kek.load(path)
    assert loaded == kek
    assert loaded.key_id == kek.key_id


def test_generate_respects_no_umask_surprises(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        Kek.generate(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    first = Kek.generate(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="overwrite"):
        Kek.generate(path)
    assert path.read_bytes() == before
    assert Kek.load(path) == first


def test_load_raw_32_byte_file(tmp_path: Path) -> None:
    raw = os.urandom(32)
    path = tmp_path / "raw.key"
    path.write_bytes(raw)
    path.chmod(0o600)
    assert Kek.load(path) == Kek.from_bytes(raw)


def test_load_raw_key_that_looks_like_whitespace(tmp_path: Path) -> None:
    raw = b"\n" * 32  # raw form is decided by length first, never stripped
    path = tmp_path / "ws.key"
    path.write_bytes(raw)
    path.chmod(0o600)
    assert Kek.load(path) == Kek.from_bytes(raw)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o602, 0o660])
def test_load_rejects_group_or_world_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "kek.key"
    Kek.generate(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        Kek.load(path)


def test_load_accepts_owner_read_only(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    kek = Kek.generate(path)
    path.chmod(0o400)
    assert Kek.load(path) == kek


@pytest.mark.parametrize(
    "content", [b"", b"00" * 31, b"00" * 33, b"x" * 31, b"x" * 33, b"zz" * 32, b"00" * 32 + b"extra"]
)
def test_load_rejects_wrong_length_or_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "kek.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError):
        Kek.load(path)


def test_load_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        Kek.load(tmp_path / "nope")
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        Kek.load(d)


def test_key_id_is_short_stable_and_distinct() -> None:
    raw = os.urandom(32)
    a, b = Kek.from_bytes(raw), Kek.from_bytes(raw)
    c = Kek.from_bytes(os.urandom(32))
    assert a.key_id == b.key_id != c.key_id
    assert len(a.key_id) == 16 and int(a.key_id, 16) >= 0
    assert a.key_id not in raw.hex()  # not a slice of the key itself


def test_key_material_never_shown() -> None:
    raw = os.urandom(32)
    kek = Kek.from_bytes(raw)
    for text in (repr(kek), str(kek), f"{kek}", f"{kek!r}"):
        assert raw.hex() not in text
        assert kek.key_id in text
    assert not hasattr(kek, "__dict__")
    with pytest.raises(TypeError):
        pickle.dumps(kek)


def test_kek_constructor_rejects_wrong_size() -> None:
    with pytest.raises(KeyFileError):
        Kek.from_bytes(b"\0" * 16)


# ----------------------------------------------------------------------------------------------
# Kek: wrap / unwrap / rewrap
# ----------------------------------------------------------------------------------------------


def test_wrap_unwrap_round_trip_and_size() -> None:
    kek = Kek.from_bytes(os.urandom(32))
    _, key = encrypt_record(PT, record_id=RID, patient=PATIENT, category=CAT)
    wrapped = kek.wrap(key, record_id=RID)
    assert len(wrapped) == WRAPPED_KEY_SIZE == 72
    assert wrapped_key_id(wrapped) == kek.key_id
    assert key not in wrapped
    assert kek.unwrap(wrapped, record_id=RID) == key
    assert kek.wrap(key, record_id=RID) != wrapped  # random nonce


def test_unwrap_bound_to_record_id() -> None:
    kek = Kek.from_bytes(os.urandom(32))
    wrapped = kek.wrap(os.urandom(32), record_id=RID)
    with pytest.raises(IntegrityError):
        kek.unwrap(wrapped, record_id=RID2)


def test_unwrap_with_wrong_kek_fails() -> None:
    right, wrong = Kek.from_bytes(os.urandom(32)), Kek.from_bytes(os.urandom(32))
    wrapped = right.wrap(os.urandom(32), record_id=RID)
    with pytest.raises(IntegrityError) as info:
        wrong.unwrap(wrapped, record_id=RID)
    assert isinstance(info.value, WrongKek)


def test_forged_key_id_still_fails() -> None:
    """Relabelling a wrapped key with another KEK's id gets past the id check but not the tag."""
    right, wrong = Kek.from_bytes(os.urandom(32)), Kek.from_bytes(os.urandom(32))
    wrapped = right.wrap(os.urandom(32), record_id=RID)
    forged = wrapped[:4] + bytes.fromhex(wrong.key_id) + wrapped[12:]
    with pytest.raises(IntegrityError) as info:
        wrong.unwrap(forged, record_id=RID)
    assert not isinstance(info.value, WrongKek)


def test_every_tampered_wrapped_byte_fails() -> None:
    kek = Kek.from_bytes(os.urandom(32))
    wrapped = kek.wrap(os.urandom(32), record_id=RID)
    for i in range(len(wrapped)):
        with pytest.raises(IntegrityError):
            kek.unwrap(_flip(wrapped, i), record_id=RID)
    for n in range(len(wrapped)):
        with pytest.raises(IntegrityError):
            kek.unwrap(wrapped[:n], record_id=RID)


def test_wrap_rejects_bad_inputs() -> None:
    kek = Kek.from_bytes(os.urandom(32))
    with pytest.raises(InvalidInput):
        kek.wrap(os.urandom(16), record_id=RID)
    with pytest.raises(InvalidInput):
        kek.wrap(os.urandom(32), record_id=RID[:8])


def test_error_messages_carry_no_key_material() -> None:
    raw_right, raw_wrong, data_key = os.urandom(32), os.urandom(32), os.urandom(32)
    wrapped = Kek.from_bytes(raw_right).wrap(data_key, record_id=RID)
    for kek in (Kek.from_bytes(raw_wrong), Kek.from_bytes(raw_right)):
        with pytest.raises(IntegrityError) as info:
            kek.unwrap(_flip(wrapped, 40), record_id=RID)
        message = str(info.value)
        for secret in (raw_right, raw_wrong, data_key):
            assert secret.hex() not in message


def test_rewrap_rotates_without_touching_ciphertext() -> None:
    old, new = Kek.from_bytes(os.urandom(32)), Kek.from_bytes(os.urandom(32))
    ct, key = encrypt_record(PT, record_id=RID, patient=PATIENT, category=CAT)
    wrapped_old = old.wrap(key, record_id=RID)
    wrapped_new = rewrap(wrapped_old, record_id=RID, old=old, new=new)
    assert wrapped_key_id(wrapped_new) == new.key_id
    assert new.unwrap(wrapped_new, record_id=RID) == key
    with pytest.raises(IntegrityError):
        old.unwrap(wrapped_new, record_id=RID)
    assert (
        decrypt_record(ct, new.unwrap(wrapped_new, record_id=RID), record_id=RID, patient=PATIENT, category=CAT) == PT
    )
    # idempotent: running the rotation again leaves already-rotated keys alone
    assert rewrap(wrapped_new, record_id=RID, old=old, new=new) == wrapped_new


def test_rewrap_fails_with_wrong_old_kek_or_record() -> None:
    old, new, other = (Kek.from_bytes(os.urandom(32)) for _ in range(3))
    wrapped = old.wrap(os.urandom(32), record_id=RID)
    with pytest.raises(IntegrityError):
        rewrap(wrapped, record_id=RID, old=other, new=new)
    with pytest.raises(IntegrityError):
        rewrap(wrapped, record_id=RID2, old=old, new=new)


def test_envelope_end_to_end_through_key_file(tmp_path: Path) -> None:
    kek = Kek.generate(tmp_path / "kek")
    ct, key = encrypt_record(PT, record_id=RID, patient=PATIENT, category=CAT)
    stored = kek.wrap(key, record_id=RID)
    del key
    restarted = Kek.load(tmp_path / "kek")
    assert (
        decrypt_record(ct, restarted.unwrap(stored, record_id=RID), record_id=RID, patient=PATIENT, category=CAT) == PT
    )


# ----------------------------------------------------------------------------------------------
# HPKE (node_client.hpke)
# ----------------------------------------------------------------------------------------------

# RFC 9180 test vector for exactly our suite: mode 0 (base), kem 0x0020 DHKEM(X25519, HKDF-SHA256),
# kdf 0x0001 HKDF-SHA256, aead 0x0002 AES-256-GCM. The RFC text's appendix only prints AES-128-GCM
# and ChaCha20-Poly1305 for X25519; this is the official JSON vector for aead 2 in the C2SP/CCTV
# "accumulated" form (1000 seals of SHAKE128-drawn aad/plaintext, SHAKE128 over all ciphertexts),
# as shipped in Go 1.26's crypto/hpke/testdata/rfc9180.json.
KAT = {
    "info": "4f6465206f6e2061204772656369616e2055726e",
    "ikmE": "2cd7c601cefb3d42a62b04b7a9041494c06c7843818e0ce28a8f704ae7ab20f9",
    "ikmR": "dac33b0e9db1b59dbbea58d59a14e7b5896e9bdf98fad6891e99d1686492b9ee",
    "skRm": "497b4502664cfea5d5af0b39934dac72242a74f8480451e1aee7d6a53320333d",
    "pkRm": "430f4b9859665145a6b1ba274024487bd66f03a2dd577d7753c68d7d7d00c00c",
    "enc": "6c93e09869df3402d7bf231bf540fadd35cd56be14f97178f0954db94b7fc256",
    "encryptions_accumulated": "1702e73e1e71705faa8241022af1deea",
}


def test_hpke_suite_constants() -> None:
    assert hpke.SUITE_ID == "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"
    assert hpke.SUITE_CODES == (0x0020, 0x0001, 0x0002)
    assert issubclass(hpke.HpkeError, NodeClientError)


def test_hpke_rfc9180_known_answer() -> None:
    h = bytes.fromhex
    suite = hpke._SUITE
    eph = suite.kem.derive_key_pair(h(KAT["ikmE"]))
    rec = suite.kem.derive_key_pair(h(KAT["ikmR"]))
    assert rec.public_key.to_public_bytes().hex() == KAT["pkRm"]
    assert hpke.public_key_from_private(h(KAT["skRm"])).hex() == KAT["pkRm"]

    # the whole sender context: 1000 seals, accumulated as the vector prescribes
    enc, sender = suite.create_sender_context(
        suite.kem.deserialize_public_key(h(KAT["pkRm"])),
        h(KAT["info"]),
        eks=KEMKeyPair(eph.private_key, eph.public_key),
    )
    assert enc.hex() == KAT["enc"]
    source = hashlib.shake_128(b"").digest(1000 * 2 * 256)
    pos = 0

    def draw() -> bytes:
        nonlocal pos
        n = source[pos]
        out = source[pos + 1 : pos + 1 + n]
        pos += 1 + n
        return out

    sink = hashlib.shake_128()
    first: tuple[bytes, bytes, bytes] | None = None
    for _ in range(1000):
        aad, pt = draw(), draw()
        ct = sender.seal(pt, aad)
        sink.update(ct)
        first = first or (aad, pt, ct)
    assert sink.digest(16).hex() == KAT["encryptions_accumulated"]

    # our single-shot API is the context's first seal (sequence 0), and opens with the vector's key
    assert first is not None
    aad, pt, ct = first
    our_enc, our_ct = hpke._seal(
        h(KAT["pkRm"]), pt, info=h(KAT["info"]), aad=aad, ephemeral_private_key=eph.private_key.to_private_bytes()
    )
    assert (our_enc.hex(), our_ct) == (KAT["enc"], ct)
    assert hpke.open_sealed(h(KAT["skRm"]), our_enc, our_ct, info=h(KAT["info"]), aad=aad) == pt


@pytest.fixture
def member() -> tuple[bytes, bytes]:
    """A member key pair made with `cryptography` (as a member's wallet/tooling would)."""
    sk = X25519PrivateKey.generate()
    return sk.private_bytes_raw(), sk.public_key().public_bytes_raw()


INFO = b"hcl-release/v1" + RID


@pytest.mark.parametrize("plaintext", [b"", os.urandom(32), os.urandom(100_000)], ids=["empty", "dek", "100k"])
def test_hpke_round_trip(member: tuple[bytes, bytes], plaintext: bytes) -> None:
    sk, pk = member
    enc, ct = hpke.seal(pk, plaintext, info=INFO, aad=b"aad")
    assert len(enc) == 32
    assert len(ct) == len(plaintext) + 16
    assert hpke.open_sealed(sk, enc, ct, info=INFO, aad=b"aad") == plaintext


def test_hpke_fresh_ephemeral_each_seal(member: tuple[bytes, bytes]) -> None:
    _, pk = member
    (e1, c1), (e2, c2) = hpke.seal(pk, b"same", info=INFO), hpke.seal(pk, b"same", info=INFO)
    assert e1 != e2 and c1 != c2


def test_hpke_wrong_private_key(member: tuple[bytes, bytes]) -> None:
    _, pk = member
    enc, ct = hpke.seal(pk, b"secret", info=INFO)
    other_sk, _ = hpke.generate_keypair()
    with pytest.raises(hpke.HpkeError):
        hpke.open_sealed(other_sk, enc, ct, info=INFO)


def test_hpke_tampered_enc_and_ciphertext(member: tuple[bytes, bytes]) -> None:
    sk, pk = member
    enc, ct = hpke.seal(pk, b"the data key..", info=INFO, aad=b"a")
    for i in range(len(enc)):
        with pytest.raises(hpke.HpkeError):
            hpke.open_sealed(sk, _flip(enc, i), ct, info=INFO, aad=b"a")
    for i in range(len(ct)):
        with pytest.raises(hpke.HpkeError):
            hpke.open_sealed(sk, enc, _flip(ct, i), info=INFO, aad=b"a")
    with pytest.raises(hpke.HpkeError):
        hpke.open_sealed(sk, enc, ct[:-1], info=INFO, aad=b"a")
    with pytest.raises(hpke.HpkeError):
        hpke.open_sealed(sk, enc[:31], ct, info=INFO, aad=b"a")


def test_hpke_wrong_info_or_aad(member: tuple[bytes, bytes]) -> None:
    sk, pk = member
    enc, ct = hpke.seal(pk, b"x", info=INFO, aad=b"a")
    with pytest.raises(hpke.HpkeError):
        hpke.open_sealed(sk, enc, ct, info=INFO + b"!", aad=b"a")
    with pytest.raises(hpke.HpkeError):
        hpke.open_sealed(sk, enc, ct, info=b"hcl-release/v1" + RID2, aad=b"a")
    with pytest.raises(hpke.HpkeError):
        hpke.open_sealed(sk, enc, ct, info=INFO, aad=b"b")
    with pytest.raises(hpke.HpkeError):
        hpke.open_sealed(sk, enc, ct, info=INFO)


def test_hpke_low_order_and_malformed_keys(member: tuple[bytes, bytes]) -> None:
    sk, pk = member
    enc, ct = hpke.seal(pk, b"x", info=INFO)
    with pytest.raises(hpke.HpkeError):  # all-zero point: X25519 result is zero, must be refused
        hpke.open_sealed(sk, bytes(32), ct, info=INFO)
    with pytest.raises(hpke.HpkeError):
        hpke.seal(bytes(32), b"x", info=INFO)
    with pytest.raises(hpke.HpkeError):
        hpke.seal(pk[:31], b"x", info=INFO)
    with pytest.raises(hpke.HpkeError):
        hpke.open_sealed(sk + b"\0", enc, ct, info=INFO)
    with pytest.raises(hpke.HpkeError):
        hpke.seal("not bytes", b"x", info=INFO)  # type: ignore[arg-type]


def test_hpke_releases_a_record_key_end_to_end(member: tuple[bytes, bytes]) -> None:
    """The gateway unwraps a record's data key and seals it to a member, who decrypts the record."""
    sk, pk = member
    kek = Kek.from_bytes(os.urandom(32))
    ct, key = encrypt_record(PT, record_id=RID, patient=PATIENT, category=CAT)
    stored = kek.wrap(key, record_id=RID)
    enc, sealed = hpke.seal(pk, kek.unwrap(stored, record_id=RID), info=INFO)
    released_key = hpke.open_sealed(sk, enc, sealed, info=INFO)
    assert decrypt_record(ct, released_key, record_id=RID, patient=PATIENT, category=CAT) == PT


@settings(max_examples=50, deadline=None)
@given(plaintext=st.binary(max_size=512), info=st.binary(max_size=64), aad=st.binary(max_size=64))
def test_hpke_round_trip_property(plaintext: bytes, info: bytes, aad: bytes) -> None:
    sk, pk = hpke.generate_keypair()
    enc, ct = hpke.seal(pk, plaintext, info=info, aad=aad)
    assert hpke.open_sealed(sk, enc, ct, info=info, aad=aad) == plaintext
