"""HPKE (RFC 9180) for releasing a record key to one member, encrypted to its on-chain X25519 key.

Members register a raw 32-byte X25519 public key in the member registry. When the gateway releases
a record to a member it seals (typically the record's data key plus metadata) to that key with
HPKE, so only the holder of the matching private key can open it, and the gateway keeps no
per-member secret.

Suite: ``DHKEM(X25519, HKDF-SHA256)`` / ``HKDF-SHA256`` / ``AES-256-GCM``, base mode, single-shot
(RFC 9180 §6.1: one ``Seal`` with sequence number 0 per fresh encapsulation).

* X25519 because that is the key type members register (32 raw bytes, no point encoding choices).
* AES-256-GCM rather than ChaCha20-Poly1305 so the whole system uses one AEAD (record encryption at
  rest is AES-256-GCM too) with 256-bit keys; every server CPU here has AES-NI.
* Base mode (no PSK, no sender authentication): authenticity of a release comes from the
  gateway's signed, on-chain access-ledger entry, not from the HPKE layer.

Callers must put context in ``info`` (e.g. ``b"hcl-release/v1" + record_id + member address``)
so a sealed blob cannot be replayed as a release of another record or to another member, and may
bind further data through ``aad``.

The implementation is the maintained ``pyhpke`` library; its ``CipherSuite.seal``/``open``
single-shot helpers are not implemented in 0.6.x, so this module uses its sender/recipient
contexts directly (the first ``seal``/``open`` of a context *is* the single-shot operation).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKeyPair, PyHPKEError

from node_client._exceptions import NodeClientError

__all__ = [
    "ENC_SIZE",
    "KEY_SIZE",
    "RELEASE_INFO",
    "SUITE_ID",
    "HpkeError",
    "generate_keypair",
    "open_sealed",
    "public_key_from_private",
    "release_aad",
    "seal",
]

SUITE_ID = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"
"""Human-readable suite name, returned in API responses so clients know how to open a release."""
SUITE_CODES = (KEMId.DHKEM_X25519_HKDF_SHA256.value, KDFId.HKDF_SHA256.value, AEADId.AES256_GCM.value)
"""RFC 9180 registry codes of the suite: (kem_id 0x0020, kdf_id 0x0001, aead_id 0x0002)."""
KEY_SIZE = 32
ENC_SIZE = 32
TAG_SIZE = 16

_SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)

#: HPKE ``info`` of the gateway's release responses: binds the ciphertext to this protocol and version.
RELEASE_INFO = b"HealthCode Ledger release v1"


def release_aad(record_id: bytes, requester: str) -> bytes:
    """HPKE ``aad`` of a release: the record id and the requester's address (a response is for one reader)."""
    return record_id + bytes.fromhex(requester.removeprefix("0x"))


class HpkeError(NodeClientError):
    """Sealing or opening failed: malformed key, low-order point, wrong key, wrong ``info``/``aad``,
    or a tampered ``enc``/ciphertext. Deliberately not more specific."""


def _as_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise HpkeError(f"{what} must be bytes")
    return bytes(value)


def _check_key(key: object, what: str) -> bytes:
    raw = _as_bytes(key, what)
    if len(raw) != KEY_SIZE:
        raise HpkeError(f"{what} must be {KEY_SIZE} bytes (raw X25519), got {len(raw)}")
    return raw


def seal(recipient_public_key: bytes, plaintext: bytes, *, info: bytes, aad: bytes = b"") -> tuple[bytes, bytes]:
    """Encrypts ``plaintext`` to ``recipient_public_key``; returns ``(enc, ciphertext)``.

    ``enc`` is the 32-byte ephemeral public key; both parts must reach the recipient. A fresh
    ephemeral key is generated per call, so sealing the same plaintext twice gives unrelated output.
    """
    return _seal(recipient_public_key, plaintext, info=info, aad=aad, ephemeral_private_key=None)


def _seal(
    recipient_public_key: bytes,
    plaintext: bytes,
    *,
    info: bytes,
    aad: bytes,
    ephemeral_private_key: bytes | None,
) -> tuple[bytes, bytes]:
    """``seal`` with an optional fixed ephemeral key: only for RFC 9180 known-answer tests."""
    pk_raw = _check_key(recipient_public_key, "recipient public key")
    pt = _as_bytes(plaintext, "plaintext")
    info_b = _as_bytes(info, "info")
    aad_b = _as_bytes(aad, "aad")
    try:
        pkr = _SUITE.kem.deserialize_public_key(pk_raw)
        eks = None
        if ephemeral_private_key is not None:
            ske = _SUITE.kem.deserialize_private_key(_check_key(ephemeral_private_key, "ephemeral key"))
            eks = KEMKeyPair(ske, _SUITE.kem.deserialize_public_key(ske.raw.public_key().public_bytes_raw()))
        enc, ctx = _SUITE.create_sender_context(pkr, info_b, eks=eks)
        return enc, ctx.seal(pt, aad_b)
    except (ValueError, TypeError, PyHPKEError) as exc:  # ValueError: low-order point (all-zero DH)
        raise HpkeError(f"HPKE seal failed: {type(exc).__name__}") from None


def open_sealed(private_key: bytes, enc: bytes, ciphertext: bytes, *, info: bytes, aad: bytes = b"") -> bytes:
    """Opens a :func:`seal` result with the recipient's raw 32-byte X25519 private key.

    Raises :class:`HpkeError` on any failure; the message never says which check failed.
    """
    sk_raw = _check_key(private_key, "private key")
    enc_b = _as_bytes(enc, "enc")
    if len(enc_b) != ENC_SIZE:
        raise HpkeError(f"enc must be {ENC_SIZE} bytes, got {len(enc_b)}")
    ct = _as_bytes(ciphertext, "ciphertext")
    if len(ct) < TAG_SIZE:
        raise HpkeError("HPKE ciphertext is truncated")
    info_b = _as_bytes(info, "info")
    aad_b = _as_bytes(aad, "aad")
    try:
        skr = _SUITE.kem.deserialize_private_key(sk_raw)
        ctx = _SUITE.create_recipient_context(enc_b, skr, info_b)
        return ctx.open(ct, aad_b)
    except (ValueError, TypeError, InvalidTag, PyHPKEError):  # OpenError (tag), ValueError (low-order enc)
        raise HpkeError("HPKE open failed (wrong key, info or aad, or tampered enc/ciphertext)") from None


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as raw bytes ``(private_key, public_key)`` (members, tests)."""
    sk = X25519PrivateKey.generate()
    return sk.private_bytes_raw(), sk.public_key().public_bytes_raw()


def public_key_from_private(private_key: bytes) -> bytes:
    """The raw 32-byte X25519 public key for a raw private key (what a member registers on-chain)."""
    raw = _check_key(private_key, "private key")
    return X25519PrivateKey.from_private_bytes(raw).public_key().public_bytes_raw()
