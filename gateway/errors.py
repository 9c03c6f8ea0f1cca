"""The gateway's domain errors: what the services, the access checks, the ledger and the stores raise.

Each error names the stable problem code it stands for (:attr:`DomainError.code`, one of
:data:`gateway.problems.PROBLEMS`) and carries the ``detail`` for the caller and any extra members
(``error=...``, ``issues=[...]``, ``validUntil=...``). Domain code knows nothing of HTTP: it raises these,
and :func:`gateway.problems.install_problem_handlers` turns every one into the same
``application/problem+json`` response a :class:`~gateway.problems.Problem` of that code gives, once, at
the boundary.

A class is the code in CamelCase (``consent_revoked`` → :class:`ConsentRevoked`). Some share a name with
the lower-level exception they translate (``node_client``'s ``ChainUnavailable``, the journal's
``JournalUnavailable``, the blob store's ``StorageFull``), so domain code refers to them through the
module: ``from gateway import errors`` … ``raise errors.ChainUnavailable(...) from exc``.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AnchorLagging",
    "CatchingUp",
    "CategoryKeyConflict",
    "CategoryKeyInvalid",
    "CategoryKeyNeeded",
    "ChainRejected",
    "ChainUnavailable",
    "ConsentAlreadyUsed",
    "ConsentExpired",
    "ConsentMissing",
    "ConsentRefused",
    "ConsentRevoked",
    "ConsentSignatureExpired",
    "ConsentSignatureInvalid",
    "DomainError",
    "EmergencyNotAllowed",
    "HolderUnavailable",
    "IntegrityError",
    "InvalidFhir",
    "InvalidRequest",
    "InvalidSignature",
    "JournalUnavailable",
    "MemberSuspended",
    "NotFound",
    "NotMember",
    "NotPatient",
    "NotRecordHolder",
    "PatientNotFound",
    "PayloadTooLarge",
    "RecordNotFound",
    "RecordRetracted",
    "Refused",
    "ReplayedNonce",
    "StorageFull",
    "StorageUnavailable",
    "TokenExpired",
    "Unauthenticated",
    "Unavailable",
    "WrongCategory",
    "WrongPurpose",
    "WrongRole",
]


class DomainError(Exception):
    """A refusal or failure of the gateway, answered as the problem ``code`` (with ``detail`` and ``extra``)."""

    code: ClassVar[str] = "internal_error"  # the groups below (Refused, ConsentRefused, Unavailable) keep it

    def __init__(self, detail: str = "", **extra: Any) -> None:
        self.detail = detail
        self.extra = extra
        super().__init__(detail)


# ---------------------------------------------------------------- the request itself (4xx)


class InvalidRequest(DomainError):
    code = "invalid_request"


class InvalidFhir(DomainError):
    """The uploaded FHIR is not acceptable (``issues``: where and why); see :class:`gateway.fhir.InvalidFhir`."""

    code = "invalid_fhir"


class PayloadTooLarge(DomainError):
    code = "payload_too_large"


# ---------------------------------------------------------------- who is asking (401)


class InvalidSignature(DomainError):
    code = "invalid_signature"


class Unauthenticated(DomainError):
    code = "unauthenticated"


class TokenExpired(DomainError):
    code = "token_expired"


class ReplayedNonce(DomainError):
    code = "replayed_nonce"


# ---------------------------------------------------------------- a signed consent that cannot be used (422, 409)


class ConsentSignatureInvalid(DomainError):
    """The patient's EIP-712 signature does not verify (changed after signing, another ledger): 422, not a
    sign-in failure (401), so a client can tell a forged consent from its own bad token."""

    code = "consent_signature_invalid"


class ConsentSignatureExpired(DomainError):
    code = "consent_signature_expired"


class ConsentAlreadyUsed(DomainError):
    """The consent's nonce was used: the same code submitted twice, or a later grant or revoke came first."""

    code = "consent_already_used"


# ---------------------------------------------------------------- not allowed (403)


class Refused(DomainError):
    """The caller may not do this (membership, role, consent)."""


class NotMember(Refused):
    code = "not_member"


class MemberSuspended(Refused):
    code = "member_suspended"


class WrongRole(Refused):
    code = "wrong_role"


class NotPatient(Refused):
    code = "not_patient"


class ConsentRefused(Refused):
    """No consent covers the access; the subclass says why."""


class ConsentMissing(ConsentRefused):
    code = "consent_missing"


class ConsentExpired(ConsentRefused):
    code = "consent_expired"


class ConsentRevoked(ConsentRefused):
    code = "consent_revoked"


class WrongCategory(ConsentRefused):
    code = "wrong_category"


class WrongPurpose(ConsentRefused):
    code = "wrong_purpose"


class EmergencyNotAllowed(ConsentRefused):
    code = "emergency_not_allowed"


# ---------------------------------------------------------------- the record


class CategoryKeyInvalid(DomainError):
    """A category key whose signature is not the patient's (``POST /v1/category-keys``, a health code)."""

    code = "category_key_invalid"


class CategoryKeyNeeded(DomainError):
    """A record that is not emergency-safe, or a slot to be named, and the patient's category key is not held."""

    code = "category_key_needed"


class CategoryKeyConflict(DomainError):
    """A patient's category key other than the one this gateway holds for her."""

    code = "category_key_conflict"


class RecordNotFound(DomainError):
    code = "record_not_found"


class NotFound(DomainError):
    code = "not_found"


class PatientNotFound(DomainError):
    """An identifier lookup found no patient the caller may look up (unknown and not allowed alike)."""

    code = "patient_not_found"


class RecordRetracted(DomainError):
    code = "record_retracted"


class NotRecordHolder(DomainError):
    """Replication: a gateway asked for a replica of a record that another gateway registered."""

    code = "not_record_holder"


# ---------------------------------------------------------------- the parts below (409, 502, 503, 507)


class ChainRejected(DomainError):
    """The chain refused the transaction (``error``: the contract's custom error, when known)."""

    code = "chain_rejected"


class IntegrityError(DomainError):
    """Stored data does not match the ledger (or does not decrypt)."""

    code = "integrity_error"


class Unavailable(DomainError):
    """A part the gateway needs cannot be used now; nothing was released."""


class ChainUnavailable(Unavailable):
    code = "chain_unavailable"


class StorageUnavailable(Unavailable):
    code = "storage_unavailable"


class JournalUnavailable(Unavailable):
    code = "journal_unavailable"


class AnchorLagging(Unavailable):
    """Batch mode: the oldest journal entry not yet anchored on-chain is older than the bound; releasing
    more would grow what a lost gateway could take with it unanchored."""

    code = "anchor_lagging"


class CatchingUp(Unavailable):
    """The read model is still catching up with the chain (a fresh start or a rebuild): a view only it
    can answer would be incomplete, so none is given (decisions go to the chain meanwhile)."""

    code = "catching_up"


class HolderUnavailable(Unavailable):
    """Federation: the gateway of the institution holding the record does not answer (or answers nonsense)."""

    code = "holder_unavailable"


class StorageFull(DomainError):
    code = "storage_full"
