"""What the JSON API answers: a pydantic model for every success body, and the problem statuses of each route.

Field names are the JSON's own (camelCase, as clients such as ``node_client.gateway_client`` read them;
the resources of the FHIR index keep the index's snake_case). Routes declare their model as the return
annotation or with ``response_model=``, so ``/openapi.json`` gives every operation a success schema, and
``responses=problems(...)`` next to the route lists the problem statuses that route answers beyond the
ones :mod:`gateway.openapi` derives from its signature (500 always; 400 with input; 401 and 403 with a
caller).

A release (``GET /v1/records/{id}``) is the hot path: its route declares :data:`Release` for the
document but returns the service's body serialised by orjson, so no model runs per release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from node_client.blinding import BLINDED_SLOTS
from node_client.vocabulary import CATEGORIES, PURPOSES, ROLES

__all__ = [
    "PROBLEM_MEDIA",
    "PROBLEM_STATUS_TEXT",
    "AccessLog",
    "AnchoredBatchProof",
    "BatchProof",
    "CategoryKeyLearned",
    "CategoryKeyRequestOut",
    "ChallengeOut",
    "ConsentGranted",
    "ConsentRevoked",
    "DiscoveredRecords",
    "EmergencyOpened",
    "EmergencyReasonOpening",
    "EmergencyReasonOpenings",
    "EmergencyReviewOut",
    "EmergencyReviews",
    "Health",
    "HolderAccesses",
    "Members",
    "MyConsents",
    "MyRecords",
    "PendingBatchProof",
    "Pins",
    "Proof",
    "Release",
    "Retracted",
    "ReviewDraft",
    "ReviewsAnchor",
    "StrictProof",
    "TokenOut",
    "TxDraft",
    "TxSent",
    "UnavailableHolder",
    "Uploaded",
    "problem_response",
    "problems",
]

# ---------------------------------------------------------------------------------------- problems

PROBLEM_MEDIA = "application/problem+json"

#: what each problem status means, as the document says it (the codes are in ``gateway.problems``)
PROBLEM_STATUS_TEXT: dict[int, str] = {
    400: "Malformed request (invalid_request)",
    401: "No valid bearer token (unauthenticated, token_expired, invalid_signature, replayed_nonce)",
    403: "Refused: not a member, wrong role, or no consent covers it",
    404: "No such record, access, problem type or endpoint",
    409: "The chain refused the transaction (chain_rejected), or the signed consent was already used "
    "(consent_already_used)",
    410: "The record was retracted",
    413: "The request body is too large",
    415: "Unsupported media type",
    422: "The FHIR content is invalid (invalid_fhir), or a signed consent does not verify or is past its "
    "submit-before time (consent_signature_invalid, consent_signature_expired)",
    500: "Internal error",
    502: "Stored data does not match the ledger (integrity_error)",
    503: "The chain, the record store or the journal is unavailable; nothing was released",
    507: "Record storage is full",
}


def problem_response(status: int) -> dict[str, Any]:
    """The OpenAPI response of one problem status: ``application/problem+json``, the ``Problem`` schema."""
    return {
        "description": PROBLEM_STATUS_TEXT[status],
        "content": {PROBLEM_MEDIA: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: the problem statuses it answers beyond those its signature implies."""
    return {status: problem_response(status) for status in statuses}


# ---------------------------------------------------------------------------------------- vocabulary

if TYPE_CHECKING:  # the slugs are data (node_client.vocabulary), so to a type checker they are strings
    Category = str
    Purpose = str
    RoleSlug = str
else:  # to pydantic and the OpenAPI document, enums of the vocabulary's slugs
    # ``slot-N``: a blinded slot of a patient whose category key this gateway does not hold (docs/data-on-chain.md)
    Category = Literal[(*(t.slug for t in CATEGORIES), *(f"slot-{n}" for n in BLINDED_SLOTS))]
    Purpose = Literal[tuple(t.slug for t in PURPOSES)]
    RoleSlug = Literal[tuple(t.slug for t in ROLES)]
MemberStatusSlug = Literal["active", "suspended", "removed", "unknown"]
Address = Annotated[str, Field(description="an EIP-55 address")]
Hex32 = Annotated[str, Field(description="32 bytes, 0x-prefixed hex")]
TxHash = Annotated[str, Field(description="a transaction hash, 0x-prefixed hex")]


class _Out(BaseModel):
    """Response bodies: built by the routes, never parsed from a client."""


class _Page(_Out):
    """A page of a list: ``cursor`` and ``next`` lead to the following page, absent on the last one."""

    cursor: str | None = Field(default=None, description="pass as `cursor` for the next page; absent on the last page")
    next: str | None = Field(default=None, description="the next page's URL (same query); absent on the last page")


# ---------------------------------------------------------------------------------------- sign-in


class ChallengeOut(_Out):
    message: str = Field(description="the EIP-4361 message to sign (EIP-191 personal_sign)")
    nonce: str
    expiresAt: int = Field(description="unix seconds")


class TokenOut(_Out):
    token: str
    tokenType: Literal["Bearer"] = "Bearer"
    address: Address
    expiresAt: int = Field(description="unix seconds")


# ---------------------------------------------------------------------------------------- records


class UploadedRecord(_Out):
    recordId: Hex32
    category: Category
    resources: int = Field(description="how many FHIR resources the record holds")
    locator: str = Field(description="where the ciphertext is stored (as registered on-chain)")
    contentHash: Hex32 = Field(description="SHA-256 of the ciphertext, as registered on-chain")
    size: int = Field(description="ciphertext bytes")
    amends: Hex32 | None = Field(None, description="the record this one is a new version of (registry amend)")
    txHash: TxHash | None = Field(None, description="the transaction that registered it")


class UnchangedRecord(_Out):
    """A record of the upload the gateway already holds, resource for resource: nothing was stored."""

    category: Category
    recordIds: list[Hex32] = Field(description="the current records holding every resource of it")


class IgnoredResource(_Out):
    resourceType: str
    reason: str


class Uploaded(_Out):
    """An upload: its new records, registered on-chain in one transaction, and new versions of records it
    changed (one ``amend`` each); what the gateway already held is listed in ``unchanged``."""

    uploadId: str
    patient: Address
    provider: Address
    txHash: TxHash | None = Field(description="the registration (or first amendment); null when nothing was new")
    blockNumber: int | None
    records: list[UploadedRecord]
    unchanged: list[UnchangedRecord] = Field(default_factory=list)
    ignored: list[IgnoredResource] = Field(description="resources not stored, with the reason")


class StrictLedger(_Out):
    """Ledgered on-chain: the transaction that logged the access (``AccessLogged``)."""

    mode: Literal["strict"]
    txHash: TxHash
    blockNumber: int


class BatchLedger(_Out):
    """Ledgered in the release journal: the entry's index (``GET /v1/accesses/{index}/proof``)."""

    mode: Literal["batch"]
    journalIndex: int


LedgerEntry = Annotated[StrictLedger | BatchLedger, Field(discriminator="mode")]


class HpkeEnvelope(_Out):
    """The FHIR JSON sealed to the caller's registered X25519 key (RFC 9180 base mode)."""

    suite: str = Field(examples=["DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"])
    info: str
    aad: str = Field(description="how the AAD is formed: recordId || requester address")
    enc: str = Field(description="the encapsulated key, base64")
    ciphertext: str = Field(description="base64")


class _ReleaseBase(_Out):
    accessId: Hex32 = Field(description="the access hash that was ledgered")
    recordId: Hex32
    patient: Address
    category: Category
    purpose: Purpose
    consentId: Hex32
    emergency: bool
    ledger: LedgerEntry
    contentType: Literal["application/fhir+json"]


class EncryptedRelease(_ReleaseBase):
    """A release, encrypted to the reader (the gateway's default)."""

    encryption: HpkeEnvelope


class PlaintextRelease(_ReleaseBase):
    """A release in the clear (a gateway configured with ``plaintext_responses``, for tests)."""

    resource: dict[str, Any] = Field(description="the FHIR resource or Bundle")


Release = EncryptedRelease | PlaintextRelease


class PatientFound(_Out):
    """The patient, and the release of her identifiers record the lookup was (ledgered like any release)."""

    patient: Address
    recordId: Hex32 = Field(description="her identifiers record, released to the caller")
    release: Release


class Retracted(_Out):
    recordId: str
    retracted: bool
    txHash: TxHash


class IndexedResource(_Out):
    """A resource of a record as the gateway's index has it (names as in the index)."""

    resource_type: str
    code_system: str | None
    code: str | None
    display: str | None
    date: str | None = Field(description="FHIR date or dateTime, possibly partial")


class DiscoveredRecord(_Out):
    recordId: Hex32
    category: Category
    provider: Address
    providerName: str = Field(description="the provider's display name (off-chain metadata); may be empty")
    registeredAt: int = Field(description="unix seconds of the registering block")
    status: str = Field("active", description="active (the current version) or amended (history, still releasable)")
    amends: Hex32 | None = Field(None, description="the record this version replaces")
    holder: Address = Field(description="the gateway holding the record (a release is forwarded to it)")
    holderName: str = Field("", description="the holding gateway's display name; may be empty")
    resources: list[IndexedResource]


class UnavailableHolder(_Out):
    """Another institution's gateway that did not answer: its records are missing from this answer."""

    gateway: Address
    name: str
    code: str = Field(description="the problem code, e.g. holder_unavailable")
    detail: str


class DiscoveredRecords(_Page):
    """A patient's records the caller currently has consent for, at every institution's gateway: a page,
    newest first by (registeredAt, recordId); ``consentedCategories`` are those of the records looked at."""

    patient: Address
    purpose: Purpose
    records: list[DiscoveredRecord]
    consentedCategories: list[Category]
    unavailable: list[UnavailableHolder] = Field(
        default_factory=list, description="gateways that did not answer (their records are missing)"
    )


# ---------------------------------------------------------------------------------------- consents


class ConsentGranted(_Out):
    consentId: Hex32
    txHash: TxHash
    blockNumber: int


class ConsentRevoked(_Out):
    consentId: str
    revoked: bool
    txHash: TxHash
    blockNumber: int


class EmergencyOpened(_Out):
    """A break-glass window: the emergency categories it covers, until when."""

    accessId: Hex32
    patient: Address
    categories: list[Category]
    validUntil: int = Field(description="unix seconds")
    txHash: TxHash


# ---------------------------------------------------------------------------------------- relay


class UnsignedTx(_Out):
    """An unsigned transaction for the caller to sign (EIP-1559: ``type`` 2; legacy fees: ``gasPrice``)."""

    model_config = ConfigDict(extra="allow")

    value: int
    chainId: int
    to: Address
    data: str
    gas: int
    nonce: int
    maxPriorityFeePerGas: int | None = None
    maxFeePerGas: int | None = None
    gasPrice: int | None = None
    type: Literal[0, 2]


class TxDraft(_Out):
    function: str
    transaction: UnsignedTx


class TxSent(_Out):
    function: str
    txHash: TxHash
    blockNumber: int


# ---------------------------------------------------------------------------------------- proofs


class EmergencyReasonOpening(_Out):
    """An emergency reason and the salt of its commitment on chain (``salt`` null: kept before salting)."""

    accessId: Hex32
    member: Address
    patient: Address
    reason: str
    salt: str | None


class EmergencyReasonOpenings(_Page):
    """A page of the emergency reasons this gateway relayed, oldest first."""

    reasons: list[EmergencyReasonOpening]


class StrictProof(_Out):
    """Strict mode: the transaction and log that carry the access hash."""

    mode: Literal["strict"]
    accessId: Hex32
    requester: Address
    patient: Address
    recordId: Hex32
    purpose: Purpose
    emergency: bool
    txHash: TxHash
    blockNumber: int
    logIndex: int
    contract: Address = Field(description="the AccessLedger")
    event: Literal["AccessLogged"]


class BatchProof(_Out):
    """Batch mode: a journal entry, its RFC 6962 leaf hash, and whether an anchor covers it yet."""

    mode: Literal["batch"]
    journalIndex: int
    entry: str = Field(description="the entry's bytes, 0x-prefixed hex")
    leafHash: Hex32
    accessId: Hex32
    requester: Address
    patient: Address
    recordId: Hex32
    purpose: Purpose
    emergency: bool
    releasedAt: int = Field(description="unix milliseconds")
    hashes: str
    anchored: bool


class PendingBatchProof(BatchProof):
    """Not anchored yet: ask again after ``Retry-After`` seconds."""

    anchored: Literal[False]


class Anchor(_Out):
    treeSize: int
    root: Hex32
    txHash: TxHash
    blockNumber: int
    contract: Address = Field(description="the AccessLedger")
    gateway: Address


class AnchoredBatchProof(BatchProof):
    """Anchored: the anchor and the inclusion proof that leads from the leaf to its root."""

    anchored: Literal[True]
    anchor: Anchor
    inclusionProof: list[Hex32]


Proof = Annotated[StrictProof | AnchoredBatchProof, Field(discriminator="mode")]


class HolderAccesses(_Out):
    """Gateway to gateway: this journal's entries of a patient, each with its proof, for the patient's gateway."""

    patient: Address
    entries: list[Annotated[AnchoredBatchProof | PendingBatchProof, Field(discriminator="anchored")]]


# ---------------------------------------------------------------------------------------- patients


class MyRecord(_Out):
    recordId: Hex32
    category: Category
    provider: Address
    providerName: str
    status: str = Field(description="active, amended or retracted")
    registeredAt: int
    txHash: TxHash


class MyRecords(_Page):
    patient: Address
    records: list[MyRecord]


class MyConsent(_Out):
    consentId: Hex32
    grantee: Address
    granteeName: str
    state: str = Field(description="active, expired, not yet valid or revoked")
    categories: list[Category]
    purposes: list[Purpose]
    validFrom: int
    validUntil: int
    signer: Address
    txHash: TxHash


class ConsentEvent(_Out):
    consentId: Hex32
    event: str = Field(description="granted or revoked")
    grantee: Address
    signer: Address
    time: int
    txHash: TxHash


class MyConsents(_Out):
    patient: Address
    consents: list[MyConsent] = Field(description="the consent in force per institution")
    history: list[ConsentEvent]


class AccessEntry(_Out):
    accessId: Hex32
    requester: Address
    requesterName: str
    recordId: Hex32
    category: Category | None = Field(description="null when the record is not known to this gateway")
    purpose: Purpose
    emergency: bool
    emergencyReason: str | None
    consentId: Hex32
    time: int = Field(description="unix seconds")
    ledger: LedgerEntry
    holder: Address | None = Field(None, description="the gateway that released and ledgered it")
    holderName: str = ""
    verified: bool = Field(description="checked against the chain by this gateway (see verification)")
    verification: Literal["chain_event", "anchored_root", "not_anchored_yet", "root_not_on_chain", "proof_mismatch"] = (
        Field(
            description="chain_event: an AccessLogged event; anchored_root: in a root its gateway anchored; "
            "not_anchored_yet; root_not_on_chain: unproven; proof_mismatch: altered"
        )
    )


class EmergencyWindow(_Out):
    accessId: Hex32
    member: Address
    memberName: str
    categories: list[Category]
    reason: str | None
    openedAt: int
    validUntil: int
    txHash: TxHash


class AccessLog(_Out):
    """Who read which of my records, newest first, and the break-glass windows opened on me."""

    patient: Address
    accesses: list[AccessEntry]
    emergencyWindows: list[EmergencyWindow]
    cursor: str | None = Field(default=None, description="pass as `cursor` for the next page; absent on the last page")
    next: str | None = Field(default=None, description="the next page's URL (same `limit`); absent on the last page")
    unavailable: list[UnavailableHolder] = Field(
        default_factory=list, description="gateways that did not answer (their batch-mode entries are missing)"
    )
    latest: int | None = Field(
        default=None,
        description="Unix seconds of this answer's newest entry: pass as `since` to poll for what comes after "
        "(absent when there is none: keep the `since` you sent)",
    )


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="http(s) URL that receives a signed POST per access")


class Webhook(_Out):
    """A webhook subscription; ``secret`` only in the answer to its registration."""

    id: str
    url: str
    createdAt: int
    secret: str | None = Field(default=None, description="the HMAC key (hex), shown once: keep it")


class Webhooks(_Out):
    webhooks: list[Webhook]


# ---------------------------------------------------------------------------------------- system


class ChainCheck(_Out):
    ok: bool
    head: int | None = None
    headAgeSeconds: float | None = None
    error: str | None = None


class StorageCheck(_Out):
    ok: bool
    kind: str
    error: str | None = None


class DatabaseCheck(_Out):
    ok: bool
    error: str | None = None


class IndexerCheck(_Out):
    ok: bool
    synced: bool
    indexedBlock: int
    headBlock: int = Field(0, description="the chain head the indexer saw last (revocations there are enforced)")
    lagBlocks: int | None
    error: str | None
    confirmations: int = 0
    reorgs: int = 0
    pendingRestrictions: int = 0
    catchingUp: bool = Field(
        False,
        description="the read model has not reached the head since the gateway started (or since a rebuild):"
        " decisions go to the chain meanwhile, as when it lags, so health is not failed by it",
    )


class JournalCheck(_Out):
    ok: bool
    error: str | None
    size: int
    anchoredSize: int
    anchorLagSeconds: float
    anchorError: str | None


class ReplicationCheck(_Out):
    """Records waiting to be pinned by peer gateways: shown, never failing health (they are retried)."""

    ok: bool = True
    backlog: int
    oldestSeconds: float | None
    lastError: str | None


class HealthChecks(_Out):
    """One entry per part; ``error`` names what failed. ``journal`` only in batch mode, ``replication`` only
    with the IPFS store and replicas wanted."""

    chain: ChainCheck
    storage: StorageCheck
    database: DatabaseCheck
    indexer: IndexerCheck
    journal: JournalCheck | None = None
    replication: ReplicationCheck | None = None


class Pins(_Out):
    """Replicas this gateway now pins for the asking gateway, each fetched from the swarm and re-hashed."""

    pinned: list[Hex32]


class Deployment(_Out):
    chainId: int
    deployBlock: int
    contracts: dict[str, Address]
    gateway: Address = Field(description="the gateway's own account")


class Health(_Out):
    """The gateway's health: ``ok`` (HTTP 200) or ``degraded`` (HTTP 503), the same body."""

    status: Literal["ok", "degraded"]
    ledgerMode: Literal["strict", "batch"]
    time: int
    deployment: Deployment
    checks: HealthChecks


class Member(_Out):
    address: Address
    name: str
    roles: list[RoleSlug]
    status: MemberStatusSlug
    encryptionKey: str = Field(description="the member's X25519 release key, 0x-prefixed hex")


class Members(_Page):
    """A page of the directory, in the order members were added (then by address)."""

    members: list[Member]


# ---------------------------------------------------------------------------------------- emergency reviews


class EmergencyReviewOut(_Out):
    """A kept review: the signed ``EmergencyReview`` fields, the note, and its place in the hash chain."""

    idx: int = Field(description="its Merkle leaf index")
    accessId: Hex32
    verdict: str
    noteHash: Hex32
    reviewer: Address
    reviewedAt: int
    note: str
    signature: str
    leafHash: Hex32
    chainHash: Hex32


class CategoryKeyLearned(_Out):
    """Whether this gateway learned the key now (201) or already held it (200)."""

    patient: Address
    learned: bool


class CategoryKeyHandedOver(_Out):
    """The patient's ``CategoryKeyRequest`` signature: the key is its SHA-256; it recovers to her."""

    patient: Address
    signature: str = Field(pattern=r"^0x[0-9a-f]{130}$")


class CategoryKeyRequestOut(_Out):
    """The ``CategoryKeyRequest`` the patient signs to hand over her category key."""

    type: Literal["CategoryKeyRequest"]
    message: dict[str, Any]
    typedData: dict[str, Any] = Field(description="for eth_signTypedData_v4")


class ReviewDraft(_Out):
    """The ``EmergencyReview`` to sign: ``message`` (submit it as signed) and the full ``typedData``."""

    type: Literal["EmergencyReview"]
    message: dict[str, Any]
    typedData: dict[str, Any] = Field(description="for eth_signTypedData_v4")


class ReviewsAnchor(_Out):
    """A root of the first ``size`` reviews, anchored with ``AccessLedger.anchorReviews``."""

    size: int
    root: Hex32
    txHash: str
    blockNumber: int


class EmergencyReviews(_Out):
    reviews: list[EmergencyReviewOut]
    anchors: list[ReviewsAnchor]
    cursor: str | None = Field(default=None, description="pass as `cursor` for the next page; absent on the last page")
