"""Patients' category keys (``category_keys``): how this gateway names the slots of a patient's records.

On chain a category bit is a slot, permuted per patient by her key (:mod:`node_client.blinding`). A
gateway learns a patient's key when she hands it over: by signing in to its portal, or in a health code
submitted through it (``POST /v1/category-keys``). It keeps the key wrapped under its KEK, bound to the
patient, and needs it to register a record that is not emergency-safe and to name a slot to people; it
never needs it to check a consent or to release (those compare slots). It keeps her signature too, sealed
under the key itself: the credential it hands her current guardian, who cannot make the key
(``GET /v1/category-keys/{patient}``).
"""

from __future__ import annotations

import hashlib
import os
import threading

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway import errors
from gateway.storage.crypto import Kek
from gateway.storage.db import Database
from node_client._exceptions import SignatureError
from node_client.blinding import PUBLIC_SLOTS, CategoryKey, category_key, slot_name
from node_client.signing import Domain
from node_client.vocabulary import SLOT_COUNT, parse_categories

__all__ = ["CategoryKeys", "key_binding", "slot_name"]

_AAD_TAG = b"hcl/category-key-aad/v1\x00"
_SIGNATURE_AAD_TAG = b"hcl/category-key-signature/v1\x00"


def key_binding(patient: str) -> bytes:
    """The wrap's associated data (``Kek.wrap``'s ``record_id``): a key unwraps only as the key of the
    patient it was stored for (KEK rotation re-wraps with it)."""
    return hashlib.sha256(_AAD_TAG + patient.lower().encode()).digest()


def _seal_signature(key: CategoryKey, patient: str, signature: bytes) -> bytes:
    """The signature encrypted under the key it makes (nonce ‖ AES-256-GCM): readable only with the key, which
    the KEK wraps, so a KEK rotation re-wraps the key alone."""
    nonce = os.urandom(12)
    return nonce + AESGCM(key.key).encrypt(nonce, signature, _SIGNATURE_AAD_TAG + patient.lower().encode())


def _open_signature(key: CategoryKey, patient: str, sealed: bytes) -> bytes:
    return AESGCM(key.key).decrypt(sealed[:12], sealed[12:], _SIGNATURE_AAD_TAG + patient.lower().encode())


class CategoryKeys:
    """The keys this gateway holds, unwrapped once per process and cached (a key never changes)."""

    def __init__(self, db: Database, kek: Kek, domain: Domain) -> None:
        self._db, self._kek, self._domain = db, kek, domain
        self._cache: dict[str, CategoryKey] = {}
        self._lock = threading.Lock()

    @property
    def domain(self) -> Domain:
        """The EIP-712 domain the patients' ``CategoryKeyRequest`` signatures are under (the ConsentRegistry's)."""
        return self._domain

    def learn(self, patient: str, signature: bytes) -> bool:
        """Keeps the key ``signature`` makes, and the signature; True if the key is new here. A signature that
        is not the patient's is ``category_key_invalid``; a key other than the one held is
        ``category_key_conflict``."""
        try:
            key = category_key(self._domain, patient, signature)
        except SignatureError as exc:
            raise errors.CategoryKeyInvalid(f"not the patient's category key: {exc}") from exc
        p = patient.lower()
        sealed = _seal_signature(key, p, signature)
        held = self.get(patient)
        if held is None:
            wrapped = self._kek.wrap(key.key, record_id=key_binding(p))
            with self._db.write() as conn:
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO category_keys (patient, wrapped, learned_at, signature)"
                    " VALUES (?, ?, strftime('%s','now'), ?)",
                    (p, wrapped, sealed),
                ).rowcount
            if inserted:
                return True
            held = self.get(patient)  # another request stored one first
        if held != key:
            raise errors.CategoryKeyConflict(f"another category key of {patient} is held here")
        if self._sealed(p) is None:  # a key learned before signatures were kept gets its signature now
            with self._db.write() as conn:
                conn.execute(
                    "UPDATE category_keys SET signature = ? WHERE patient = ? AND signature IS NULL", (sealed, p)
                )
        return False

    def signature(self, patient: str) -> bytes | None:
        """Her signature that makes the key held, or None: not held here, or learned before signatures were
        kept (she signs in once more)."""
        p = patient.lower()
        sealed = self._sealed(p)
        key = None if sealed is None else self.get(p)
        return None if key is None or sealed is None else _open_signature(key, p, sealed)

    def _sealed(self, p: str) -> bytes | None:
        row = self._db.read().execute("SELECT signature FROM category_keys WHERE patient = ?", (p,)).fetchone()
        return None if row is None or row["signature"] is None else bytes(row["signature"])

    def get(self, patient: str) -> CategoryKey | None:
        """The patient's key, or None if she has not handed it to this gateway."""
        p = patient.lower()
        with self._lock:
            if p in self._cache:
                return self._cache[p]
        row = self._db.read().execute("SELECT wrapped FROM category_keys WHERE patient = ?", (p,)).fetchone()
        if row is None:
            return None
        key = CategoryKey(self._kek.unwrap(bytes(row["wrapped"]), record_id=key_binding(p)))
        with self._lock:
            self._cache[p] = key
        return key

    def require(self, patient: str) -> CategoryKey:
        """The patient's key, or the ``category_key_needed`` problem."""
        key = self.get(patient)
        if key is None:
            raise errors.CategoryKeyNeeded(
                f"the category key of {patient} is not known here: she signs in to this gateway's portal once, "
                "or shows a health code that carries it"
            )
        return key

    def slot(self, patient: str, category: int) -> int:
        """The slot a record of ``category`` takes: an emergency-safe one needs no key."""
        return category if category in PUBLIC_SLOTS else self.require(patient).slot(category)

    def name_slot(self, patient: str, slot: int) -> str:
        """``slot`` of the patient's mask named for people and API answers (slug, or ``slot-N``)."""
        return slot_name(None if slot in PUBLIC_SLOTS else self.get(patient), slot)

    def renamed(self, patient: str, name: object) -> object:
        """A slot as a peer gateway named it: its ``slot-N`` (it lacks her key) named here if this gateway holds
        the key; anything else as it came."""
        n = name.removeprefix("slot-") if isinstance(name, str) else ""
        return self.name_slot(patient, int(n)) if n.isdigit() and int(n) < SLOT_COUNT else name

    def parse(self, patient: str, value: str) -> int:
        """A category list as people and peers write it (``mental-health,slot-9``) → the patient's slot mask:
        a slug through her key (``category_key_needed`` for a blinded one without it), ``slot-N`` as is.
        ValueError names a term that is neither."""
        slots = 0
        for raw in value.split(","):
            term = raw.strip().lower()
            n = term.removeprefix("slot-")
            if n != term and n.isdigit() and int(n) < SLOT_COUNT:
                slots |= 1 << int(n)
            elif term:
                slots |= 1 << self.slot(patient, int(parse_categories(term)).bit_length() - 1)
        if not slots:
            raise ValueError("at least one category is required")
        return slots

    def name_slots(self, patient: str, mask: int) -> list[str]:
        """The set bits of a slot mask, named, in slot order."""
        key = self.get(patient)
        return [slot_name(key, s) for s in range(SLOT_COUNT) if mask >> s & 1]
