"""Record encryption at rest: envelope encryption with a per-record data key and a gateway KEK.

Why envelope encryption
-----------------------
Every record gets its own fresh random 256-bit *data key* (DEK). The record is encrypted with the
DEK; the DEK is then *wrapped* (encrypted) under the gateway's *key-encryption key* (KEK), and only
the wrapped DEK is stored. This gives us:

* **crypto-shredding** – destroying one wrapped DEK makes one record unreadable, even though its
  ciphertext may survive in IPFS caches or backups (content-addressed storage cannot guarantee
  physical deletion, so erasure is done in the key domain);
* **cheap KEK rotation** – :func:`rewrap` re-encrypts 72-byte wrapped keys, never the (possibly
  large) ciphertexts, which can stay where they are;
* **per-record release** – a DEK can be re-encrypted (HPKE, see ``node_client.hpke``) to one member
  without exposing the KEK or any other record.

Formats (all fixed-size fields, so no length ambiguity in the AAD)
-------------------------------------------------------------------
Record ciphertext::

    b"HCL1" | nonce (12) | AES-256-GCM(DEK, nonce, plaintext, aad) (len(pt) + 16-byte tag)
    aad = b"HCL1" | nonce | record_id (32) | patient address (20) | category (1)

Binding record id, patient and category in the AAD means a ciphertext copied onto another record,
patient or category fails authentication instead of silently decrypting under the wrong metadata.
Including the header (version + nonce) in the AAD makes any header edit a tag failure too (GCM
already authenticates the nonce implicitly; the explicit copy keeps the rule simple: *every* byte
that is not the GCM body is in the AAD).

Wrapped data key::

    b"HKW1" | kek_id (8) | nonce (12) | AES-256-GCM(KEK, nonce, DEK, aad) (32 + 16)  = 72 bytes
    aad = b"HKW1" | kek_id | record_id (32)

Failures are deliberately uniform: any problem decrypting or unwrapping raises
:class:`IntegrityError` with a message that never contains key material.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
from pathlib import Path
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.storage.fs import fsync_dir

__all__ = [
    "CATEGORY_MAX",
    "DATA_KEY_SIZE",
    "RECORD_ID_SIZE",
    "WRAPPED_KEY_SIZE",
    "GatewayCryptoError",
    "IntegrityError",
    "InvalidInput",
    "Kek",
    "KeyFileError",
    "WrongKek",
    "decrypt_record",
    "encrypt_record",
    "normalise_patient",
    "rewrap",
    "wrapped_key_id",
]

RECORD_MAGIC = b"HCL1"
"""Version tag of the record ciphertext format. A new format gets a new magic, never a flag."""
WRAP_MAGIC = b"HKW1"
"""Version tag of the wrapped-data-key format."""

DATA_KEY_SIZE = 32
KEK_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
RECORD_ID_SIZE = 32
ADDRESS_SIZE = 20
CATEGORY_MAX = 255
KEK_ID_SIZE = 8
"""Bytes of the KEK fingerprint carried in wrapped keys (16 hex chars): enough to tell a handful
of KEK generations apart; it is an identifier, not an authenticator (the GCM tag is)."""

_RECORD_HEADER_SIZE = len(RECORD_MAGIC) + NONCE_SIZE
_MIN_RECORD_SIZE = _RECORD_HEADER_SIZE + TAG_SIZE
WRAPPED_KEY_SIZE = len(WRAP_MAGIC) + KEK_ID_SIZE + NONCE_SIZE + DATA_KEY_SIZE + TAG_SIZE
_KEK_ID_LABEL = b"healthcode-ledger/kek-id/v1\x00"
_ADDRESS_RE = re.compile(r"(?:0x)?([0-9a-fA-F]{40})")


class GatewayCryptoError(Exception):
    """Root of every error this module raises on purpose."""


class IntegrityError(GatewayCryptoError):
    """Decryption or unwrapping failed: wrong key, wrong record/patient/category, tampered,
    truncated or unknown-format input. Deliberately not more specific (no decryption oracle)."""


class WrongKek(IntegrityError):
    """A wrapped key names a different KEK (by key id) than the one used to unwrap it.

    A subclass of :class:`IntegrityError` so callers that only care "it did not unwrap" need not
    know; rotation code catches it to tell old-generation keys from corrupted ones."""


class InvalidInput(GatewayCryptoError, ValueError):
    """A caller passed a malformed argument (wrong record id length, bad address, category out of
    range, data key of the wrong size). A programming error, not an integrity failure."""


class KeyFileError(GatewayCryptoError):
    """The KEK file is missing, has unsafe permissions, the wrong length, or would be overwritten."""


# --------------------------------------------------------------------------------------------
# Record encryption
# --------------------------------------------------------------------------------------------


def normalise_patient(patient: str) -> bytes:
    """The 20 address bytes of ``patient`` (``0x``-prefixed or bare hex, any letter case).

    Case is normalised rather than EIP-55-checked: the AAD must be identical for ``0xAbC…`` and
    ``0xabc…`` (the same account), and checksum validation belongs at the API boundary.
    """
    if not isinstance(patient, str):
        raise InvalidInput("patient must be a hex address string")
    match = _ADDRESS_RE.fullmatch(patient.strip())
    if match is None:
        raise InvalidInput("patient must be a 20-byte hex address")
    return bytes.fromhex(match.group(1).lower())


def _check_record_id(record_id: bytes) -> bytes:
    if not isinstance(record_id, (bytes, bytearray)) or len(record_id) != RECORD_ID_SIZE:
        raise InvalidInput(f"record_id must be {RECORD_ID_SIZE} bytes")
    return bytes(record_id)


def _check_category(category: int) -> bytes:
    if isinstance(category, bool) or not isinstance(category, int) or not 0 <= category <= CATEGORY_MAX:
        raise InvalidInput(f"category must be an int in 0..{CATEGORY_MAX}")
    return bytes([category])


def _check_data_key(data_key: bytes) -> bytes:
    if not isinstance(data_key, (bytes, bytearray)) or len(data_key) != DATA_KEY_SIZE:
        raise InvalidInput(f"data key must be {DATA_KEY_SIZE} bytes")
    return bytes(data_key)


def _record_aad(header: bytes, record_id: bytes, patient: str, category: int) -> bytes:
    return header + _check_record_id(record_id) + normalise_patient(patient) + _check_category(category)


def encrypt_record(plaintext: bytes, *, record_id: bytes, patient: str, category: int) -> tuple[bytes, bytes]:
    """Encrypts one record under a fresh data key; returns ``(ciphertext, data_key)``.

    The data key is returned in the clear so the caller can wrap it (:meth:`Kek.wrap`) and/or
    release it (HPKE) — the caller must not persist it unwrapped. A fresh key per record means the
    random 96-bit nonce is used exactly once per key, so GCM's nonce-reuse limits never apply.
    """
    if not isinstance(plaintext, (bytes, bytearray, memoryview)):
        raise InvalidInput("plaintext must be bytes")
    nonce = os.urandom(NONCE_SIZE)
    header = RECORD_MAGIC + nonce
    aad = _record_aad(header, record_id, patient, category)
    data_key = AESGCM.generate_key(bit_length=256)
    body = AESGCM(data_key).encrypt(nonce, bytes(plaintext), aad)
    return header + body, data_key


def decrypt_record(ciphertext: bytes, data_key: bytes, *, record_id: bytes, patient: str, category: int) -> bytes:
    """Decrypts a record made by :func:`encrypt_record`; any mismatch raises :class:`IntegrityError`.

    Argument *shape* errors (e.g. a 31-byte record id) raise :class:`InvalidInput` first, because
    they are bugs in the caller rather than evidence about the ciphertext.
    """
    data_key = _check_data_key(data_key)
    aad_tail = _check_record_id(record_id) + normalise_patient(patient) + _check_category(category)
    if not isinstance(ciphertext, (bytes, bytearray, memoryview)):
        raise InvalidInput("ciphertext must be bytes")
    ciphertext = bytes(ciphertext)
    if len(ciphertext) < _MIN_RECORD_SIZE:
        raise IntegrityError("record ciphertext is truncated")
    if ciphertext[: len(RECORD_MAGIC)] != RECORD_MAGIC:
        raise IntegrityError("record ciphertext has an unknown format/version header")
    header = ciphertext[:_RECORD_HEADER_SIZE]
    nonce = header[len(RECORD_MAGIC) :]
    try:
        return AESGCM(data_key).decrypt(nonce, ciphertext[_RECORD_HEADER_SIZE:], header + aad_tail)
    except InvalidTag:
        raise IntegrityError(
            "record ciphertext does not authenticate (wrong key, record, patient or category, or tampered)"
        ) from None


# --------------------------------------------------------------------------------------------
# Key-encryption key
# --------------------------------------------------------------------------------------------


def _kek_id_bytes(key: bytes) -> bytes:
    # Domain-separated SHA-256 so the published id can never be confused with (or used as) a hash
    # of the key in some other protocol. Publishing it is safe: the key has 256 bits of entropy.
    return hashlib.sha256(_KEK_ID_LABEL + key).digest()[:KEK_ID_SIZE]


def wrapped_key_id(wrapped: bytes) -> str:
    """The key id of the KEK that ``wrapped`` claims to be wrapped under (hex), without unwrapping.

    Lets rotation jobs and dashboards count keys per KEK generation. The claim is only trusted
    after a successful :meth:`Kek.unwrap` (the id is in the AAD, so it cannot be altered unnoticed).
    """
    if not isinstance(wrapped, (bytes, bytearray)) or len(wrapped) != WRAPPED_KEY_SIZE:
        raise IntegrityError("wrapped data key has the wrong length")
    if bytes(wrapped[: len(WRAP_MAGIC)]) != WRAP_MAGIC:
        raise IntegrityError("wrapped data key has an unknown format/version header")
    return bytes(wrapped[len(WRAP_MAGIC) : len(WRAP_MAGIC) + KEK_ID_SIZE]).hex()


class Kek:
    """The gateway's key-encryption key: 32 random bytes that only ever wrap data keys.

    Wrapping uses **AES-256-GCM with AAD = record id** rather than AES-KW (RFC 3394):

    * AES-KW has no associated data, so a wrapped key could be moved to another record's row and
      would unwrap fine; GCM's AAD binds each wrapped key to the record it belongs to.
    * AES-KW is deterministic, so two records that (through a bug) shared a DEK would show the same
      wrapped value; GCM with a random nonce leaks nothing.
    * The one GCM caveat, random-nonce collisions, needs ~2^32 wraps under one KEK to matter; the
      gateway wraps one key per record and rotates KEKs long before that (document in ops).

    The key bytes live only in a private attribute; ``repr``/``str`` show the key id, and pickling
    is refused so the key cannot end up in a cache, a task queue or a crash dump by accident.
    """

    __slots__ = ("_aead", "_key", "_key_id")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEK_SIZE:
            raise KeyFileError(f"a KEK must be exactly {KEK_SIZE} bytes")
        self._key = bytes(key)
        self._key_id = _kek_id_bytes(self._key)
        self._aead = AESGCM(self._key)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, key: bytes) -> Kek:
        """A KEK from raw bytes (tests, or a key fetched from a secrets manager/HSM export)."""
        return cls(key)

    @classmethod
    def generate(cls, path: str | os.PathLike[str]) -> Kek:
        """Creates a new random KEK in ``path`` (hex, one line, mode 0600) and returns it.

        Refuses to overwrite an existing file (``O_EXCL``): silently replacing a KEK would make
        every record wrapped under the old one unreadable.
        """
        path = Path(path)
        key = os.urandom(KEK_SIZE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        except FileExistsError:
            raise KeyFileError(f"refusing to overwrite existing KEK file {path}") from None
        except OSError as exc:
            raise KeyFileError(f"cannot create KEK file {path}: {exc.strerror}") from None
        try:
            os.fchmod(fd, 0o600)  # independent of the process umask
            os.write(fd, key.hex().encode("ascii") + b"\n")
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise KeyFileError(f"cannot write KEK file {path}: {exc.strerror}") from None
        os.close(fd)
        fsync_dir(path.parent)
        return cls(key)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Kek:
        """Loads a KEK from ``path``: 32 raw bytes, or 64 hex characters (surrounding whitespace ok).

        The file must not be accessible to group or others (no bits in ``0o077``): a readable KEK
        file is treated as a leaked KEK, and failing at start-up is the only way to get that
        noticed. Permissions are checked on the opened descriptor (no check-then-open race).
        """
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise KeyFileError(f"KEK file {path} does not exist") from None
        except OSError as exc:
            raise KeyFileError(f"cannot open KEK file {path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise KeyFileError(f"KEK file {path} is not a regular file")
            if st.st_mode & 0o077:
                raise KeyFileError(
                    f"KEK file {path} has mode {stat.S_IMODE(st.st_mode):04o}; it must not be accessible "
                    "to group or others (chmod 600)"
                )
            data = os.read(fd, 256)
        except OSError as exc:
            raise KeyFileError(f"cannot read KEK file {path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        return cls(_parse_key_file(data, path))

    # -- identity -----------------------------------------------------------------------------

    @property
    def key_id(self) -> str:
        """Short hex fingerprint (16 chars) of the key: safe to log and to store next to data."""
        return self._key_id.hex()

    def __repr__(self) -> str:
        return f"Kek(key_id={self.key_id!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("Kek objects hold key material and cannot be pickled")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Kek):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self._key_id)

    # -- wrapping -----------------------------------------------------------------------------

    def wrap(self, data_key: bytes, *, record_id: bytes) -> bytes:
        """Encrypts ``data_key`` under this KEK, bound to ``record_id``; returns 72 bytes."""
        data_key = _check_data_key(data_key)
        record_id = _check_record_id(record_id)
        nonce = os.urandom(NONCE_SIZE)
        prefix = WRAP_MAGIC + self._key_id
        return prefix + nonce + self._aead.encrypt(nonce, data_key, prefix + record_id)

    def unwrap(self, wrapped: bytes, *, record_id: bytes) -> bytes:
        """Recovers the data key; wrong KEK, wrong record id or any tampering → :class:`IntegrityError`.

        A wrapped key naming another KEK raises :class:`WrongKek` (an ``IntegrityError``) without
        attempting decryption, so rotation code can tell "old generation" from "corrupt".
        """
        record_id = _check_record_id(record_id)
        claimed = wrapped_key_id(wrapped)
        if claimed != self.key_id:
            raise WrongKek(f"data key is wrapped under KEK {claimed}, not {self.key_id}")
        wrapped = bytes(wrapped)
        prefix_len = len(WRAP_MAGIC) + KEK_ID_SIZE
        nonce = wrapped[prefix_len : prefix_len + NONCE_SIZE]
        try:
            return self._aead.decrypt(nonce, wrapped[prefix_len + NONCE_SIZE :], wrapped[:prefix_len] + record_id)
        except InvalidTag:
            raise IntegrityError(
                f"wrapped data key does not authenticate under KEK {self.key_id} (wrong record or tampered)"
            ) from None


def rewrap(wrapped: bytes, *, record_id: bytes, old: Kek, new: Kek) -> bytes:
    """Re-wraps one data key from ``old`` to ``new`` (KEK rotation); ciphertexts are untouched.

    Idempotent: a key already wrapped under ``new`` is verified (unwrapped) and returned unchanged,
    so a rotation job that crashed half-way can simply be run again over every record.
    """
    if wrapped_key_id(wrapped) == new.key_id:
        new.unwrap(wrapped, record_id=record_id)
        return bytes(wrapped)
    return new.wrap(old.unwrap(wrapped, record_id=record_id), record_id=record_id)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _parse_key_file(data: bytes, path: Path) -> bytes:
    if len(data) == KEK_SIZE:
        return data  # raw form (checked first: raw bytes may legitimately look like whitespace)
    text = data.strip()
    if len(text) == 2 * KEK_SIZE:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise KeyFileError(f"KEK file {path} must hold {KEK_SIZE} raw bytes or {2 * KEK_SIZE} hex characters")
