"""Request bodies of the JSON API (pydantic models at the boundary); what it answers is in ``schemas.py``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CategoryKeyIn",
    "ChallengeIn",
    "EmergencyIn",
    "LookupIn",
    "PinsIn",
    "ReviewDraftIn",
    "SignedGrantIn",
    "SignedReviewIn",
    "SignedRevokeIn",
    "TokenIn",
]

HexAddress = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
HexBytes = Field(pattern=r"^0x([0-9a-fA-F]{2})*$", max_length=4096)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChallengeIn(_Strict):
    address: str = HexAddress


class TokenIn(_Strict):
    message: str = Field(max_length=2048)
    signature: str = HexBytes


class GrantMessage(_Strict):
    """The EIP-712 ``ConsentGrant`` message exactly as signed (field names of ``docs/consent-signing.md``)."""

    patient: str = HexAddress
    grantee: str = HexAddress
    categories: int = Field(ge=1, lt=1 << 16)
    purposes: int = Field(ge=1, lt=1 << 8)
    validFrom: int = Field(ge=0, lt=1 << 40)
    validUntil: int = Field(ge=0, lt=1 << 40)
    nonce: int = Field(ge=0, lt=1 << 64)
    deadline: int = Field(ge=0, lt=1 << 256)


class RevokeMessage(_Strict):
    """The EIP-712 ``ConsentRevoke`` message exactly as signed."""

    patient: str = HexAddress
    grantee: str = HexAddress
    nonce: int = Field(ge=0, lt=1 << 64)
    deadline: int = Field(ge=0, lt=1 << 256)


class SignedGrantIn(_Strict):
    """A patient- or guardian-signed EIP-712 ConsentGrant (the health-code payload)."""

    type: Literal["ConsentGrant"] = "ConsentGrant"
    message: GrantMessage
    signer: str = HexAddress
    signature: str = HexBytes
    categoryKey: str | None = Field(
        default=None,
        pattern=r"^0x[0-9a-fA-F]{130}$",
        description="the patient's category-key signature the health code carries: this gateway keeps her key",
    )


class CategoryKeyIn(_Strict):
    """A patient's signed ``CategoryKeyRequest``: handing her category key to this gateway."""

    patient: str = HexAddress
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$", description="65 bytes, r || s || v")


class SignedRevokeIn(_Strict):
    type: Literal["ConsentRevoke"] = "ConsentRevoke"
    message: RevokeMessage
    signer: str = HexAddress
    signature: str = HexBytes


class EmergencyIn(_Strict):
    """A break-glass request: the member's own signed ``emergencyAccess`` transaction, and the reason.

    The reason and its salt stay off-chain in the gateway; the transaction carries only their salted
    commitment (:func:`node_client.commitments.reason_commitment`), which no guess of the wording confirms.
    """

    signedTransaction: str = Field(pattern=r"^0x([0-9a-fA-F]{2})+$", max_length=8192)
    reason: str = Field(min_length=3, max_length=2000)
    salt: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$", description="the 32 random bytes the commitment is salted with")


class LookupIn(_Strict):
    """``POST /v1/patients/lookup``: an identifier, in the body so that it is in no URL or access log."""

    system: str = Field(min_length=1, max_length=512, description="the identifier's system (a URI), or phone")
    value: str = Field(min_length=1, max_length=256, description="the identifier's value")
    purpose: str = Field("treatment", max_length=64, description="why you look the patient up, as for a release")


class TxDraftIn(_Strict):
    """A ConsentRegistry call to prepare for the caller's own signature (see ``gateway.services.relay``)."""

    function: str = Field(max_length=64, examples=["setEmergencyOptOut"])
    args: dict[str, Any] = Field(default_factory=dict, examples=[{"optedOut": True}])


class PinsIn(_Strict):
    """Gateway to gateway: records the asking gateway registered, whose ciphertexts it asks this one to pin."""

    recordIds: list[str] = Field(min_length=1, max_length=64)


class SignedTxIn(_Strict):
    """A transaction the caller signed (EIP-1559), to relay."""

    signedTransaction: str = Field(pattern=r"^0x([0-9a-fA-F]{2})+$", max_length=8192)


# ---------------------------------------------------------------------------------------- emergency reviews

Hex32In = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
Verdict = Literal["justified", "unjustified", "needs-follow-up"]  # node_client.signing.REVIEW_VERDICTS


class ReviewMessage(_Strict):
    """The EIP-712 ``EmergencyReview`` message exactly as signed."""

    accessId: str = Hex32In
    verdict: str = Field(max_length=32)  # checked against the verdicts after the signature: a 422, not a 400
    noteHash: str = Hex32In
    reviewer: str = HexAddress
    reviewedAt: int = Field(ge=0, lt=1 << 64)


class SignedReviewIn(_Strict):
    """An auditor's signed review of an emergency access, and the note whose hash it signs."""

    message: ReviewMessage
    note: str = Field(max_length=4000)
    signature: str = HexBytes


class ReviewDraftIn(_Strict):
    """What the auditor means to say: the typed data to sign is returned."""

    accessId: str = Hex32In
    verdict: Verdict
    note: str = Field(max_length=4000)
