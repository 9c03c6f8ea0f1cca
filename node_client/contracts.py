"""Typed wrappers of the four contracts.

Each wrapper binds a deployed address to the packaged ABI and a shared :class:`ChainClient`. Views return
frozen dataclasses; state-changing methods take the signing account explicitly (the client holds no
keys) and return what the transaction produced (an id) plus the :class:`TxResult`. Reverts surface as
the Solidity error's own exception (``node_client.errors``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from hexbytes import HexBytes
from web3.contract import Contract
from web3.types import BlockIdentifier

from node_client._abi import load_abi
from node_client._client import ChainClient, TxResult
from node_client._exceptions import ContractRevert, TransactionError, revert_class_of
from node_client.events import EventRecord, read_events
from node_client.signing import ConsentGrant, ConsentRevoke, Domain, SignedMessage

__all__ = [
    "AccessEntry",
    "AccessLedger",
    "AccessOutcome",
    "Action",
    "Anchor",
    "CheckResult",
    "Consent",
    "ConsentRegistry",
    "ConsentStatus",
    "Governance",
    "Member",
    "MemberRegistry",
    "MemberStatus",
    "Proposal",
    "ProposalStatus",
    "Record",
    "RecordInput",
    "RecordRegistry",
    "RecordStatus",
    "UploadInput",
]

ZERO32 = b"\x00" * 32


class MemberStatus(enum.IntEnum):
    NONE = 0
    ACTIVE = 1
    SUSPENDED = 2
    REMOVED = 3


class Action(enum.IntEnum):
    """Governance actions of ``MemberRegistry.propose`` (same order as the Solidity enum)."""

    ADD_MEMBER = 0
    SUSPEND_MEMBER = 1
    REINSTATE_MEMBER = 2
    REMOVE_MEMBER = 3
    CHANGE_ROLES = 4
    ROTATE_ENCRYPTION_KEY = 5
    ADD_ADMIN = 6
    REMOVE_ADMIN = 7
    CHANGE_THRESHOLD = 8
    TRANSFER_RECORDS = 9  # target: the successor gateway; arg: the member number whose records it takes


class ProposalStatus(enum.IntEnum):
    NONE = 0
    PENDING = 1
    EXECUTED = 2
    CANCELLED = 3


class ConsentStatus(enum.IntEnum):
    NONE = 0
    ACTIVE = 1
    REVOKED = 2


class RecordStatus(enum.IntEnum):
    NONE = 0
    ACTIVE = 1
    AMENDED = 2
    RETRACTED = 3


@dataclass(frozen=True, slots=True)
class Member:
    address: str
    status: MemberStatus
    roles: int
    since: int
    encryption_key: bytes
    metadata_hash: bytes


@dataclass(frozen=True, slots=True)
class Governance:
    admin_count: int
    threshold: int
    admin_epoch: int


@dataclass(frozen=True, slots=True)
class Proposal:
    proposal_id: int
    target: str
    arg: int
    action: Action
    approvals: int
    status: ProposalStatus
    expires_at: int
    admin_epoch: int
    proposer: str
    encryption_key: bytes
    metadata_hash: bytes


@dataclass(frozen=True, slots=True)
class Consent:
    consent_id: bytes
    categories: int
    purposes: int
    status: ConsentStatus
    valid_from: int
    valid_until: int
    nonce: int


@dataclass(frozen=True, slots=True)
class CheckResult:
    allowed: bool
    consent_id: bytes
    emergency: bool


@dataclass(frozen=True, slots=True)
class Record:
    record_id: bytes
    patient: str
    category: int
    status: RecordStatus
    registered_at: int


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One release of a ``logAccessBatch``: the arguments of ``logAccess``."""

    requester: str
    patient: str
    record_id: bytes
    purpose: int
    access_hash: bytes

    def as_tuple(self) -> tuple[str, str, bytes, int, bytes]:
        return (
            to_checksum_address(self.requester),
            to_checksum_address(self.patient),
            _b32(self.record_id),
            int(self.purpose),
            _b32(self.access_hash),
        )


@dataclass(frozen=True, slots=True)
class AccessOutcome:
    """What ``logAccessBatch`` did with one entry: logged (under ``consent_id``), or refused with the
    error ``logAccess`` would have reverted with (``refusal``, a :class:`ContractRevert` subclass)."""

    logged: bool
    consent_id: bytes = ZERO32
    emergency: bool = False
    refusal: type[ContractRevert] | None = None


@dataclass(frozen=True, slots=True)
class RecordInput:
    """One record of a ``registerBatch``."""

    record_id: bytes
    category: int
    content_hash: bytes
    locator: bytes

    def as_tuple(self) -> tuple[bytes, int, bytes, bytes]:
        return (self.record_id, self.category, self.content_hash, self.locator)


@dataclass(frozen=True, slots=True)
class UploadInput:
    """One upload of a ``registerUploads``: the records of one patient from one provider."""

    patient: str
    provider: str
    records: Sequence[RecordInput]

    def as_tuple(self) -> tuple[str, str, list[tuple[bytes, int, bytes, bytes]]]:
        return (
            to_checksum_address(self.patient),
            to_checksum_address(self.provider),
            [r.as_tuple() for r in self.records],
        )


@dataclass(frozen=True, slots=True)
class Anchor:
    tree_size: int
    anchored_at: int
    count: int


class _Wrapper:
    name: ClassVar[str]

    def __init__(self, client: ChainClient, address: str, *, deploy_block: int = 0) -> None:
        self.client = client
        self.address = to_checksum_address(address)
        self.deploy_block = deploy_block
        self.contract: Contract = client.w3.eth.contract(address=self.address, abi=load_abi(self.name))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address})"

    def _call(self, fn: str, *args: Any) -> Any:
        return self.client.call(self.contract.functions[fn](*args))

    def _transact(self, signer: LocalAccount, fn: str, *args: Any, gas: int | None = None) -> TxResult:
        return self.client.transact(self.contract.functions[fn](*args), signer=signer, gas=gas)

    def events_in(self, result: TxResult, name: str | None = None) -> list[EventRecord]:
        """The events this contract emitted in ``result``'s transaction (optionally only ``name``)."""
        from node_client.events import EventDecoder

        decoder = EventDecoder({self.name: self.address})
        out = []
        for log in result.receipt["logs"]:
            rec = decoder.decode(log)
            if rec is not None and (name is None or rec.name == name):
                out.append(rec)
        return out

    def events(
        self,
        names: Iterable[str] | None = None,
        *,
        from_block: int | None = None,
        to_block: int | None = None,
        page_size: int = 5_000,
    ) -> Iterator[EventRecord]:
        """This contract's events, paged over block ranges from its deploy block by default."""
        return read_events(
            self.client,
            {self.name: self.address},
            from_block=self.deploy_block if from_block is None else from_block,
            to_block=to_block,
            names=names,
            page_size=page_size,
        )


#: ``logAccessBatch``'s selector and argument type, for encoding its calldata with eth-abi directly
_ACCESS_ENTRIES = "(address,address,bytes32,uint8,bytes32)[]"
_LOG_ACCESS_BATCH = function_signature_to_4byte_selector(f"logAccessBatch({_ACCESS_ENTRIES})")
#: gas limit of a ``logAccessBatch``: measured ~13,000-15,000 per entry and under 25,000 for the costliest
#: (every slot cold, a refused emergency entry), so the bound leaves room; only gas used is paid
_BATCH_GAS_BASE, _BATCH_GAS_PER_ENTRY = 80_000, 40_000


def _b32(value: bytes | str | None) -> bytes:
    if value is None:
        return ZERO32
    raw = bytes(HexBytes(value))
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes, got {len(raw)}")
    return raw


class MemberRegistry(_Wrapper):
    """Consortium membership and its M-of-N governance."""

    name = "MemberRegistry"

    def propose(
        self,
        signer: LocalAccount,
        action: Action,
        target: str | None = None,
        *,
        arg: int = 0,
        encryption_key: bytes | str | None = None,
        metadata_hash: bytes | str | None = None,
    ) -> tuple[int, TxResult]:
        """Proposes ``action``; returns the new proposal id."""
        result = self._transact(
            signer,
            "propose",
            int(action),
            to_checksum_address(target) if target else "0x" + "00" * 20,
            arg,
            _b32(encryption_key),
            _b32(metadata_hash),
        )
        (created,) = self.events_in(result, "ProposalCreated")
        return int(created["proposalId"]), result

    def approve(self, signer: LocalAccount, proposal_id: int) -> TxResult:
        return self._transact(signer, "approve", proposal_id)

    def execute(self, signer: LocalAccount, proposal_id: int) -> TxResult:
        return self._transact(signer, "execute", proposal_id)

    def cancel(self, signer: LocalAccount, proposal_id: int) -> TxResult:
        return self._transact(signer, "cancel", proposal_id)

    def enact(
        self,
        admins: Sequence[LocalAccount],
        action: Action,
        target: str | None = None,
        **kwargs: Any,
    ) -> int:
        """Proposes with ``admins[0]``, approves with the others and executes: a whole M-of-N round."""
        proposal_id, _ = self.propose(admins[0], action, target, **kwargs)
        for admin in admins[1:]:
            self.approve(admin, proposal_id)
        self.execute(admins[0], proposal_id)
        return proposal_id

    def is_active(self, member: str, roles: int) -> bool:
        return bool(self._call("isActive", to_checksum_address(member), roles))

    def active_roles(self, member: str) -> int:
        return int(self._call("activeRoles", to_checksum_address(member)))

    def gateway_number(self, account: str) -> int:
        """The member number of ``account`` if it is an active gateway, else 0."""
        return int(self._call("gatewayNumber", to_checksum_address(account)))

    def number_of(self, member: str) -> int:
        """The member number of ``member`` (0 if never added): ``arg`` of a TRANSFER_RECORDS proposal."""
        return int(self._call("numberOf", to_checksum_address(member)))

    def custodian_of(self, number: int) -> str:
        """Who holds the records registered under member number ``number`` (zero address if none)."""
        return to_checksum_address(self._call("custodianOf", number))

    def member_of(self, member: str) -> Member:
        status, roles, since, key, meta = self._call("memberOf", to_checksum_address(member))
        return Member(to_checksum_address(member), MemberStatus(status), roles, since, bytes(key), bytes(meta))

    def is_admin(self, account: str) -> bool:
        return bool(self._call("isAdmin", to_checksum_address(account)))

    def governance(self) -> Governance:
        return Governance(*self._call("governance"))

    def proposal_of(self, proposal_id: int) -> Proposal:
        t, arg, action, approvals, status, expires, epoch, proposer, key, meta = self._call("proposalOf", proposal_id)
        return Proposal(
            proposal_id,
            t,
            arg,
            Action(action),
            approvals,
            ProposalStatus(status),
            expires,
            epoch,
            proposer,
            bytes(key),
            bytes(meta),
        )

    def has_approved(self, proposal_id: int, admin: str) -> bool:
        return bool(self._call("hasApproved", proposal_id, to_checksum_address(admin)))

    def proposal_count(self) -> int:
        return int(self._call("proposalCount"))

    def members(self) -> list[Member]:
        """Every institution ever added (from ``MemberAdded`` events), with its current state."""
        seen: dict[str, None] = {}
        for ev in self.events(["MemberAdded"]):
            seen.setdefault(ev["member"], None)
        return [self.member_of(addr) for addr in seen]


class ConsentRegistry(_Wrapper):
    """Patient consents, guardians and emergency access."""

    name = "ConsentRegistry"
    _domain: Domain | None = None

    def domain(self) -> Domain:
        """The EIP-712 domain, read from the contract (ERC-5267) once and then remembered: its name,
        version, chain id and address are fixed for a deployed contract, and every signature check and
        every health code needs it."""
        if self._domain is None:
            _fields, name, version, chain_id, verifying, _salt, _ext = self._call("eip712Domain")
            self._domain = Domain(chain_id=chain_id, verifying_contract=verifying, name=name, version=version)
        return self._domain

    def grant(
        self,
        patient: LocalAccount,
        grantee: str,
        categories: int,
        purposes: int,
        valid_from: int,
        valid_until: int,
    ) -> tuple[bytes, TxResult]:
        """The patient grants directly; returns the consent id."""
        result = self._transact(
            patient, "grant", to_checksum_address(grantee), categories, purposes, valid_from, valid_until
        )
        return self._granted_id(result), result

    def build_grant(
        self,
        patient: str,
        grantee: str,
        categories: int,
        purposes: int,
        valid_from: int,
        valid_until: int,
        *,
        deadline: int | None = None,
        nonce: int | None = None,
    ) -> ConsentGrant:
        """A ``ConsentGrant`` carrying the pair's current nonce (read from the chain unless given)."""
        return ConsentGrant(
            patient=to_checksum_address(patient),
            grantee=to_checksum_address(grantee),
            categories=categories,
            purposes=purposes,
            valid_from=valid_from,
            valid_until=valid_until,
            nonce=self.nonces(patient, grantee) if nonce is None else nonce,
            deadline=deadline if deadline is not None else self._default_deadline(),
        )

    def build_revoke(
        self, patient: str, grantee: str, *, deadline: int | None = None, nonce: int | None = None
    ) -> ConsentRevoke:
        """A ``ConsentRevoke`` carrying the pair's current nonce."""
        return ConsentRevoke(
            patient=to_checksum_address(patient),
            grantee=to_checksum_address(grantee),
            nonce=self.nonces(patient, grantee) if nonce is None else nonce,
            deadline=deadline if deadline is not None else self._default_deadline(),
        )

    def _default_deadline(self) -> int:
        """One hour after the chain's (not the wall clock's) latest block time."""
        return self.client.block_timestamp() + 3600

    def grant_by_sig(self, submitter: LocalAccount, signed: SignedMessage) -> tuple[bytes, TxResult]:
        """Submits a signed grant (the submitter must be an active member); returns the consent id."""
        g = signed.message
        if not isinstance(g, ConsentGrant):
            raise TypeError("grant_by_sig needs a signed ConsentGrant")
        terms = (g.patient, g.grantee, g.categories, g.purposes, g.valid_from, g.valid_until)
        result = self._transact(
            submitter, "grantBySig", terms, g.nonce, g.deadline, to_checksum_address(signed.signer), signed.signature
        )
        return self._granted_id(result), result

    def revoke(self, patient: LocalAccount, grantee: str) -> TxResult:
        return self._transact(patient, "revoke", to_checksum_address(grantee))

    def revoke_by_sig(self, submitter: LocalAccount, signed: SignedMessage) -> TxResult:
        r = signed.message
        if not isinstance(r, ConsentRevoke):
            raise TypeError("revoke_by_sig needs a signed ConsentRevoke")
        return self._transact(
            submitter,
            "revokeBySig",
            r.patient,
            r.grantee,
            r.nonce,
            r.deadline,
            to_checksum_address(signed.signer),
            signed.signature,
        )

    def set_guardian(self, patient: LocalAccount, guardian: str, valid_until: int) -> TxResult:
        return self._transact(patient, "setGuardian", to_checksum_address(guardian), valid_until)

    def remove_guardian(self, patient: LocalAccount, guardian: str) -> TxResult:
        return self._transact(patient, "removeGuardian", to_checksum_address(guardian))

    def set_emergency_opt_out(self, patient: LocalAccount, opted_out: bool) -> TxResult:
        return self._transact(patient, "setEmergencyOptOut", opted_out)

    def emergency_access(
        self, member: LocalAccount, patient: str, categories: int, reason_hash: bytes
    ) -> tuple[bytes, TxResult]:
        """Opens a break-glass window; returns the emergency access id."""
        result = self._transact(member, "emergencyAccess", to_checksum_address(patient), categories, _b32(reason_hash))
        (ev,) = self.events_in(result, "EmergencyAccessGranted")
        return bytes(ev["accessId"]), result

    def check(
        self, patient: str, grantee: str, category: int, purpose: int, *, block: BlockIdentifier = "latest"
    ) -> CheckResult:
        allowed, consent_id, emergency = self.client.call(
            self.contract.functions.check(
                to_checksum_address(patient), to_checksum_address(grantee), int(category), int(purpose)
            ),
            block=block,
        )
        return CheckResult(bool(allowed), bytes(consent_id), bool(emergency))

    def consent_of(self, patient: str, grantee: str) -> Consent:
        cid, cats, purposes, status, vf, vu, nonce = self._call(
            "consentOf", to_checksum_address(patient), to_checksum_address(grantee)
        )
        return Consent(bytes(cid), cats, purposes, ConsentStatus(status), vf, vu, nonce)

    def nonces(self, patient: str, grantee: str) -> int:
        return int(self._call("nonces", to_checksum_address(patient), to_checksum_address(grantee)))

    def guardian_until(self, patient: str, guardian: str) -> int:
        return int(self._call("guardianUntil", to_checksum_address(patient), to_checksum_address(guardian)))

    def emergency_opted_out(self, patient: str) -> bool:
        return bool(self._call("emergencyOptedOut", to_checksum_address(patient)))

    def emergency_window(self, patient: str, member: str) -> tuple[int, int]:
        cats, until = self._call("emergencyWindow", to_checksum_address(patient), to_checksum_address(member))
        return int(cats), int(until)

    def _granted_id(self, result: TxResult) -> bytes:
        (ev,) = self.events_in(result, "ConsentGranted")
        return bytes(ev["consentId"])


class RecordRegistry(_Wrapper):
    """The record index (hashes and locators, never health data)."""

    name = "RecordRegistry"

    def register(
        self,
        gateway: LocalAccount,
        record_id: bytes,
        patient: str,
        provider: str,
        category: int,
        content_hash: bytes,
        locator: bytes,
    ) -> TxResult:
        return self._transact(
            gateway,
            "register",
            _b32(record_id),
            to_checksum_address(patient),
            to_checksum_address(provider),
            int(category),
            _b32(content_hash),
            locator,
        )

    def register_batch(
        self, gateway: LocalAccount, patient: str, provider: str, records: Sequence[RecordInput]
    ) -> TxResult:
        return self._transact(
            gateway,
            "registerBatch",
            to_checksum_address(patient),
            to_checksum_address(provider),
            [r.as_tuple() for r in records],
        )

    def register_uploads(self, gateway: LocalAccount, uploads: Sequence[UploadInput]) -> TxResult:
        """Several uploads' records in one transaction (a gateway's group commit); all or nothing."""
        return self._transact(gateway, "registerUploads", [u.as_tuple() for u in uploads])

    def amend(
        self,
        gateway: LocalAccount,
        previous_record_id: bytes,
        record_id: bytes,
        provider: str,
        content_hash: bytes,
        locator: bytes,
    ) -> TxResult:
        return self._transact(
            gateway,
            "amend",
            _b32(previous_record_id),
            _b32(record_id),
            to_checksum_address(provider),
            _b32(content_hash),
            locator,
        )

    def retract(self, gateway: LocalAccount, record_id: bytes) -> TxResult:
        return self._transact(gateway, "retract", _b32(record_id))

    def record_of(self, record_id: bytes) -> Record:
        patient, category, status, at = self._call("recordOf", _b32(record_id))
        return Record(_b32(record_id), patient, category, RecordStatus(status), at)

    def holder_of(self, record_id: bytes) -> str:
        """The gateway that may amend or retract the record (zero address if unknown)."""
        return to_checksum_address(self._call("holderOf", _b32(record_id)))


class AccessLedger(_Wrapper):
    """The access ledger: strict per-release entries and batch Merkle anchors."""

    name = "AccessLedger"

    def log_access(
        self,
        gateway: LocalAccount,
        requester: str,
        patient: str,
        record_id: bytes,
        purpose: int,
        access_hash: bytes,
    ) -> tuple[CheckResult, TxResult]:
        """Ledgers one release; reverts (raises) unless it is authorized at this block."""
        result = self._transact(
            gateway,
            "logAccess",
            to_checksum_address(requester),
            to_checksum_address(patient),
            _b32(record_id),
            int(purpose),
            _b32(access_hash),
        )
        (ev,) = self.events_in(result, "AccessLogged")
        return CheckResult(True, bytes(ev["consentId"]), bool(ev["emergency"])), result

    def log_access_batch(
        self, gateway: LocalAccount, entries: Sequence[AccessEntry], *, estimate: bool = False
    ) -> tuple[list[AccessOutcome], TxResult]:
        """Ledgers many releases in one transaction; each entry's outcome, in order, from the receipt's
        events (``AccessLogged`` matched by access hash, ``AccessRefused`` by index). Reverts (raises)
        only for the whole batch: not a gateway, no entries.

        The gas limit is a bound per entry unless ``estimate``: Hardhat's estimate of a large batch takes
        longer than the transaction itself, and an entry's gas hardly depends on the state."""
        rows = [e.as_tuple() for e in entries]
        data = _LOG_ACCESS_BATCH + abi_encode([_ACCESS_ENTRIES], [rows])
        gas = None if estimate else _BATCH_GAS_BASE + _BATCH_GAS_PER_ENTRY * len(rows)
        result = self.client.transact_data(
            self.address, data, signer=gateway, gas=gas, fn=self.contract.functions.logAccessBatch(rows)
        )
        logged: dict[bytes, AccessOutcome] = {}
        refused: dict[int, AccessOutcome] = {}
        for ev in self.events_in(result):
            if ev.name == "AccessLogged":
                logged[bytes(ev["accessHash"])] = AccessOutcome(True, bytes(ev["consentId"]), bool(ev["emergency"]))
            elif ev.name == "AccessRefused":
                refused[int(ev["index"])] = AccessOutcome(False, refusal=revert_class_of(bytes(ev["reason"])))
        outcomes = [refused.get(i) or logged.get(_b32(e.access_hash)) for i, e in enumerate(entries)]
        if any(o is None for o in outcomes):
            raise TransactionError(f"{result.tx_hash}: an entry has neither an AccessLogged nor an AccessRefused")
        return [o for o in outcomes if o is not None], result

    def anchor_batch(self, gateway: LocalAccount, root: bytes, tree_size: int) -> TxResult:
        return self._transact(gateway, "anchorBatch", _b32(root), tree_size)

    def anchor_reviews(self, gateway: LocalAccount, root: bytes, size: int) -> TxResult:
        """Anchors the Merkle root of the first ``size`` emergency-access reviews the gateway keeps."""
        return self._transact(gateway, "anchorReviews", _b32(root), size)

    def reviews_anchors(self, gateway: str, *, from_block: int | None = None) -> list[tuple[int, bytes]]:
        """``(size, root)`` of every ``EmergencyReviewsAnchored`` of ``gateway``, in chain order."""
        return [
            (int(ev["size"]), bytes(ev["root"]))
            for ev in self.events(["EmergencyReviewsAnchored"], from_block=from_block)
            if ev["gateway"].lower() == gateway.lower()
        ]

    def latest_anchor(self, gateway: str) -> Anchor:
        size, at, count = self._call("latestAnchor", to_checksum_address(gateway))
        return Anchor(size, at, count)
