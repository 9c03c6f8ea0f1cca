"""EIP-712 messages (consents, a patient's category-key request, auditors' reviews of emergency accesses): the one place that builds,
signs and verifies them.

The patient (or a guardian) signs a ``ConsentGrant`` or ``ConsentRevoke`` off-line; any active member
submits it with ``ConsentRegistry.grantBySig`` / ``revokeBySig``. The types here are byte-for-byte the
ones in ``ConsentRegistry.sol``; :func:`typed_data` gives the JSON any wallet accepts for
``eth_signTypedData_v4`` (see ``docs/consent-signing.md``).

The domain is read from the contract (ERC-5267 ``eip712Domain()``) by the contract wrapper rather than
hard-coded, so a signature is always bound to the right chain id and contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from node_client._exceptions import SignatureError

__all__ = [
    "CATEGORY_KEY_TYPES",
    "CONSENT_GRANT_TYPES",
    "CONSENT_REVOKE_TYPES",
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "EMERGENCY_REVIEW_TYPES",
    "KEY_STATEMENT",
    "REVIEW_VERDICTS",
    "CategoryKeyRequest",
    "ConsentGrant",
    "ConsentRevoke",
    "Domain",
    "EmergencyReview",
    "SignedMessage",
    "TypedMessage",
    "digest",
    "recover_signer",
    "sign",
    "sign_typed",
    "typed_data",
    "verify",
]

DOMAIN_NAME = "HealthCode Ledger"
DOMAIN_VERSION = "1"

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]

CONSENT_GRANT_TYPES: dict[str, list[dict[str, str]]] = {
    "ConsentGrant": [
        {"name": "patient", "type": "address"},
        {"name": "grantee", "type": "address"},
        {"name": "categories", "type": "uint16"},
        {"name": "purposes", "type": "uint8"},
        {"name": "validFrom", "type": "uint40"},
        {"name": "validUntil", "type": "uint40"},
        {"name": "nonce", "type": "uint64"},
        {"name": "deadline", "type": "uint256"},
    ]
}

CONSENT_REVOKE_TYPES: dict[str, list[dict[str, str]]] = {
    "ConsentRevoke": [
        {"name": "patient", "type": "address"},
        {"name": "grantee", "type": "address"},
        {"name": "nonce", "type": "uint64"},
        {"name": "deadline", "type": "uint256"},
    ]
}

#: an auditor's review of a break-glass access (off-chain; its Merkle root is anchored, docs/audit.md)
EMERGENCY_REVIEW_TYPES: dict[str, list[dict[str, str]]] = {
    "EmergencyReview": [
        {"name": "accessId", "type": "bytes32"},
        {"name": "verdict", "type": "string"},
        {"name": "noteHash", "type": "bytes32"},
        {"name": "reviewer", "type": "address"},
        {"name": "reviewedAt", "type": "uint64"},
    ]
}

#: what the patient's wallet shows her when she signs (both languages: one fixed text, one key)
KEY_STATEMENT = (
    "HealthCode Ledger: make my category key. Give it only to institutions that hold my records. "
    "健康码账本：生成我的类别密钥，仅提供给保存我病历的机构。"
)

CATEGORY_KEY_TYPES: dict[str, list[dict[str, str]]] = {
    "CategoryKeyRequest": [
        {"name": "patient", "type": "address"},
        {"name": "statement", "type": "string"},
    ]
}

#: what an auditor may conclude about an emergency access
REVIEW_VERDICTS: tuple[str, ...] = ("justified", "unjustified", "needs-follow-up")


@dataclass(frozen=True, slots=True)
class Domain:
    """An EIP-712 domain: binds a signature to one chain and one ConsentRegistry."""

    chain_id: int
    verifying_contract: str
    name: str = DOMAIN_NAME
    version: str = DOMAIN_VERSION

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }


@dataclass(frozen=True, slots=True)
class ConsentGrant:
    """A patient's grant: ``grantee`` may read ``categories`` for ``purposes`` in [valid_from, valid_until)."""

    patient: str
    grantee: str
    categories: int
    purposes: int
    valid_from: int
    valid_until: int
    nonce: int
    deadline: int

    primary_type = "ConsentGrant"
    types = CONSENT_GRANT_TYPES

    def message(self) -> dict[str, Any]:
        return {
            "patient": to_checksum_address(self.patient),
            "grantee": to_checksum_address(self.grantee),
            "categories": self.categories,
            "purposes": self.purposes,
            "validFrom": self.valid_from,
            "validUntil": self.valid_until,
            "nonce": self.nonce,
            "deadline": self.deadline,
        }


@dataclass(frozen=True, slots=True)
class ConsentRevoke:
    """A patient's revocation of its consent to ``grantee``."""

    patient: str
    grantee: str
    nonce: int
    deadline: int

    primary_type = "ConsentRevoke"
    types = CONSENT_REVOKE_TYPES

    def message(self) -> dict[str, Any]:
        return {
            "patient": to_checksum_address(self.patient),
            "grantee": to_checksum_address(self.grantee),
            "nonce": self.nonce,
            "deadline": self.deadline,
        }


@dataclass(frozen=True, slots=True)
class EmergencyReview:
    """An auditor's verdict on emergency access ``access_id``; the note itself stays off-chain (its hash here)."""

    access_id: bytes
    verdict: str
    note_hash: bytes
    reviewer: str
    reviewed_at: int

    primary_type = "EmergencyReview"
    types = EMERGENCY_REVIEW_TYPES

    def message(self) -> dict[str, Any]:
        return {
            "accessId": "0x" + self.access_id.hex(),
            "verdict": self.verdict,
            "noteHash": "0x" + self.note_hash.hex(),
            "reviewer": to_checksum_address(self.reviewer),
            "reviewedAt": self.reviewed_at,
        }


@dataclass(frozen=True, slots=True)
class CategoryKeyRequest:
    """The fixed message a patient signs to make (or show again) her category key."""

    patient: str
    statement: str = KEY_STATEMENT

    primary_type = "CategoryKeyRequest"
    types = CATEGORY_KEY_TYPES

    def message(self) -> dict[str, Any]:
        return {"patient": to_checksum_address(self.patient), "statement": self.statement}


#: every message type signed under the domain
TypedMessage = ConsentGrant | ConsentRevoke | EmergencyReview | CategoryKeyRequest


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """A signed grant or revoke, with the address that claims to have signed it."""

    message: ConsentGrant | ConsentRevoke
    signer: str
    signature: bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.message.primary_type,
            "message": self.message.message(),  # the signed field names, as the API takes them
            "signer": self.signer,
            "signature": "0x" + self.signature.hex(),
        }


def typed_data(domain: Domain, message: TypedMessage) -> dict[str, Any]:
    """The full typed-data JSON, as a wallet's ``eth_signTypedData_v4`` takes it."""
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, **message.types},
        "primaryType": message.primary_type,
        "domain": domain.as_dict(),
        "message": message.message(),
    }


def sign(account: LocalAccount, domain: Domain, message: ConsentGrant | ConsentRevoke) -> SignedMessage:
    """Signs ``message`` under ``domain`` with a local key."""
    return SignedMessage(message, account.address, sign_typed(account, domain, message))


def sign_typed(account: LocalAccount, domain: Domain, message: TypedMessage) -> bytes:
    """The signature of ``message`` under ``domain`` by a local key."""
    signed = Account.sign_typed_data(
        account.key, domain_data=domain.as_dict(), message_types=message.types, message_data=message.message()
    )
    return bytes(signed.signature)


def digest(domain: Domain, message: TypedMessage) -> bytes:
    """The EIP-712 hash a signature of ``message`` signs (what a review's Merkle leaf commits to)."""
    encoded = encode_typed_data(full_message=typed_data(domain, message))
    return bytes(keccak(b"\x19" + encoded.version + encoded.header + encoded.body))


def recover_signer(domain: Domain, message: TypedMessage, signature: bytes) -> str:
    """The address whose key produced ``signature`` (EOA signatures only)."""
    encoded = encode_typed_data(full_message=typed_data(domain, message))
    try:
        return str(Account.recover_message(encoded, signature=signature))
    except Exception as exc:  # eth-keys raises several types for malformed signatures
        raise SignatureError(f"malformed signature: {exc}") from exc


def verify(domain: Domain, signed: SignedMessage) -> None:
    """Raises :class:`SignatureError` unless ``signed`` was signed by ``signed.signer`` under ``domain``.

    Off-line check for EOA signers; contract-wallet (ERC-1271) signatures are checked on-chain only.
    """
    recovered = recover_signer(domain, signed.message, signed.signature)
    if recovered.lower() != signed.signer.lower():
        raise SignatureError(f"signature is by {recovered}, not by {signed.signer}")
