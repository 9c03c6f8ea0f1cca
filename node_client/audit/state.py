"""The ledger's state rebuilt from events, and the contracts' access rules applied to it.

State (members, guardians, opt-outs, consents, emergency windows, records) is rebuilt in Python in event
order, mirroring ``ConsentRegistry.check`` and ``AccessLedger.logAccess`` rule for rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from node_client.audit.model import Finding, hex0x, unhex
from node_client.events import EventRecord
from node_client.vocabulary import PURPOSES, SLOT_COUNT, Purpose, Role

__all__ = ["ACTIVE", "ROLE_GATEWAY", "Consent", "State", "Verdict", "Windows", "run_of"]

# mirrors contracts/libraries/Vocabulary.sol and ConsentRegistry.sol
_PROVIDER_ROLES = 0x0F
_ROLE_EMERGENCY = int(Role.EMERGENCY)
ROLE_GATEWAY = int(Role.GATEWAY)
_PURPOSE_EMERGENCY = int(Purpose.EMERGENCY)
_PURPOSE_COUNT = len(PURPOSES)
_EMERGENCY_WINDOW = 4 * 3600
ACTIVE, _SUSPENDED, _REMOVED = 1, 2, 3
_C_ACTIVE, _C_REVOKED = 1, 2
_R_ACTIVE, _R_AMENDED, R_RETRACTED = 1, 2, 3

#: half-open ``[from, until)`` times at which an access is authorized
Windows = tuple[tuple[int, int], ...]


def run_of(windows: Windows, t: int) -> tuple[int, int] | None:
    """The contiguous run of ``windows`` (half-open intervals) that contains ``t``, or ``None``."""
    lo = hi = None
    for a, b in windows:
        if a <= t < b:
            lo = a if lo is None else min(lo, a)
            hi = b if hi is None else max(hi, b)
    if lo is None or hi is None:
        return None
    grown = True
    while grown:  # overlapping or adjacent windows extend the run
        grown = False
        for a, b in windows:
            if a <= hi < b:
                hi, grown = b, True
            if a < lo <= b:
                lo, grown = a, True
    return lo, hi


#: (findings, record category, consent or emergency-access id, emergency) of :meth:`State.authorize`
Verdict = tuple[list[Finding], int | None, bytes | None, bool]
#: an emergency window: (categories, valid until, access id, block)
_Emergency = tuple[int, int, bytes, int]


@dataclass(slots=True)
class Consent:
    consent_id: bytes
    categories: int
    purposes: int
    status: int
    valid_from: int
    valid_until: int
    block: int
    tx_hash: str
    revoked_block: int | None = None
    revoked_tx: str | None = None

    def covers(self, category: int, purpose: int) -> bool:
        return (self.categories >> category) & 1 == 1 and (self.purposes >> purpose) & 1 == 1


@dataclass(slots=True)
class State:
    members: dict[str, list[int]] = field(default_factory=dict)  # addr -> [status, roles]
    guardians: dict[tuple[str, str], int] = field(default_factory=dict)
    opt_out: dict[str, list[int]] = field(default_factory=dict)  # patient -> [opted_out, last_opt_out]
    consents: dict[tuple[str, str], Consent] = field(default_factory=dict)
    emergency: dict[tuple[str, str], _Emergency] = field(default_factory=dict)
    # id -> [patient, category, status, content_hash, locator, block, tx_hash]
    records: dict[bytes, list[Any]] = field(default_factory=dict)
    version: int = 0  # bumped by every applied event: verdicts cached under an older version are stale

    # ------------------------------------------------------------------------------- events

    def apply(self, ev: EventRecord, ts: int) -> None:
        """Applies one state-changing event (others are ignored)."""
        self.version += 1
        handler = _HANDLERS.get(ev.name)
        if handler is not None:
            handler(self, ev.args, ev, ts)

    def _member_status(self, a: Mapping[str, Any], status: int) -> None:
        self.members.setdefault(a["member"], [0, 0])[0] = status

    def _on_member_added(self, a: Mapping[str, Any], ev: EventRecord, ts: int) -> None:
        self.members[a["member"]] = [ACTIVE, int(a["roles"])]

    def _on_roles_changed(self, a: Mapping[str, Any], ev: EventRecord, ts: int) -> None:
        self.members.setdefault(a["member"], [0, 0])[1] = int(a["roles"])

    def _on_consent_granted(self, a: Mapping[str, Any], ev: EventRecord, ts: int) -> None:
        self.consents[(a["patient"], a["grantee"])] = Consent(
            bytes(a["consentId"]),
            int(a["categories"]),
            int(a["purposes"]),
            _C_ACTIVE,
            int(a["validFrom"]),
            int(a["validUntil"]),
            ev.block_number,
            ev.tx_hash,
        )

    def _on_consent_revoked(self, a: Mapping[str, Any], ev: EventRecord, ts: int) -> None:
        c = self.consents.get((a["patient"], a["grantee"]))
        if c is not None:
            c.status, c.revoked_block, c.revoked_tx = _C_REVOKED, ev.block_number, ev.tx_hash

    def _on_guardian_set(self, a: Mapping[str, Any], ev: EventRecord, ts: int) -> None:
        self.guardians[(a["patient"], a["guardian"])] = int(a["validUntil"])

    def _on_guardian_removed(self, a: Mapping[str, Any], ev: EventRecord, ts: int) -> None:
        self.guardians.pop((a["patient"], a["guardian"]), None)

    def _on_opt_out(self, a: Mapping[str, Any], ev: EventRecord, ts: int) -> None:
        slot = self.opt_out.setdefault(a["patient"], [0, 0])
        if a["optedOut"]:
            slot[0], slot[1] = 1, ts
        else:
            slot[0] = 0

    def _on_emergency(self, a: Mapping[str, Any], ev: EventRecord, ts: int) -> None:
        window = (int(a["categories"]), int(a["validUntil"]), bytes(a["accessId"]), ev.block_number)
        self.emergency[(a["patient"], a["member"])] = window

    def _on_record_registered(self, a: Mapping[str, Any], ev: EventRecord, ts: int) -> None:
        self.records[bytes(a["recordId"])] = [
            a["patient"],
            int(a["category"]),
            _R_ACTIVE,
            bytes(a["contentHash"]),
            bytes(a["locator"]),
            ev.block_number,
            ev.tx_hash,
        ]

    def _record_status(self, record_id: bytes, status: int) -> None:
        rec = self.records.get(record_id)
        if rec is not None:
            rec[2] = status

    # ------------------------------------------------------------------------------- checkpoints

    def to_json(self) -> dict[str, Any]:
        """The state as JSON (bytes as 0x-hex), for checkpoints."""
        consents = [
            [p, g, hex0x(c.consent_id), c.categories, c.purposes, c.status, c.valid_from, c.valid_until]
            + [c.block, c.tx_hash, c.revoked_block, c.revoked_tx]
            for (p, g), c in self.consents.items()
        ]
        return {
            "members": self.members,
            "guardians": [[p, g, until] for (p, g), until in self.guardians.items()],
            "opt_out": self.opt_out,
            "consents": consents,
            "emergency": [
                [p, m, cats, until, hex0x(aid), block] for (p, m), (cats, until, aid, block) in self.emergency.items()
            ],
            "records": {
                hex0x(rid): [r[0], r[1], r[2], hex0x(r[3]), hex0x(r[4]), r[5], r[6]] for rid, r in self.records.items()
            },
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> State:
        st = cls()
        st.members = {a: [int(v[0]), int(v[1])] for a, v in obj["members"].items()}
        st.guardians = {(p, g): int(u) for p, g, u in obj["guardians"]}
        st.opt_out = {p: [int(v[0]), int(v[1])] for p, v in obj["opt_out"].items()}
        st.consents = {(c[0], c[1]): Consent(unhex(c[2], 32), *c[3:]) for c in obj["consents"]}
        st.emergency = {(e[0], e[1]): (int(e[2]), int(e[3]), unhex(e[4], 32), int(e[5])) for e in obj["emergency"]}
        st.records = {
            unhex(rid, 32): [r[0], r[1], r[2], unhex(r[3], 32), unhex(r[4]), r[5], r[6]]
            for rid, r in obj["records"].items()
        }
        return st

    # ------------------------------------------------------------------------------- rules

    def _usable_emergency(self, patient: str, requester: str, category: int) -> _Emergency | None:
        """The requester's emergency window on the patient if it covers ``category`` and no opt-out voids it
        (whatever the time)."""
        e = self.emergency.get((patient, requester))
        o = self.opt_out.get(patient, [0, 0])
        if e is not None and (e[0] >> category) & 1 and not o[0] and e[1] - _EMERGENCY_WINDOW > o[1]:
            return e
        return None

    def windows(self, requester: str, patient: str, record_id: bytes, purpose: int) -> Windows:
        """The times ``t`` at which :meth:`authorize` finds nothing but review items, in this state:
        ``[valid_from, valid_until)`` of a covering consent, ``(-1, until)`` of an emergency window."""
        status, roles = self.members.get(requester, (0, 0))
        if status != ACTIVE or roles & _PROVIDER_ROLES == 0:
            return ()
        rec = self.records.get(record_id)
        if rec is None or rec[0] != patient or rec[2] == R_RETRACTED:
            return ()
        category = rec[1]
        if not (0 <= category < SLOT_COUNT and 0 <= purpose < _PURPOSE_COUNT):
            return ()
        out: list[tuple[int, int]] = []
        c = self.consents.get((patient, requester))
        if c is not None and c.status == _C_ACTIVE and c.covers(category, purpose):
            out.append((c.valid_from, c.valid_until))
        if purpose == _PURPOSE_EMERGENCY and roles & _ROLE_EMERGENCY:
            e = self._usable_emergency(patient, requester, category)
            if e is not None:
                out.append((-1, e[1]))
        return tuple(out)

    def authorize(self, requester: str, patient: str, record_id: bytes, purpose: int, t: int) -> Verdict:
        """Mirrors ``logAccess`` + ``ConsentRegistry.check`` at time ``t``.

        Returns (findings as (kind, message, evidence), record category, consent id, emergency).
        Unlike the contract, which only says no, it names *why* (revoked, expired, not a member...).
        """
        status, roles = self.members.get(requester, (0, 0))
        found = _member_findings(requester, status, roles)
        rec = self.records.get(record_id)
        if rec is None:
            found.append(("record_mismatch", "no such record on-chain", {}))
            return found, None, None, False
        rec_patient, category, rec_status = rec[0], rec[1], rec[2]
        if rec_patient != patient:
            found.append(("record_mismatch", f"record belongs to {rec_patient}, not {patient}", {}))
        if rec_status == R_RETRACTED:
            found.append(("record_mismatch", "record was retracted", {}))
        if not (0 <= category < SLOT_COUNT and 0 <= purpose < _PURPOSE_COUNT):
            found.append(("entry_without_valid_consent", "slot or purpose outside the vocabulary", {}))
            return found, category, None, False
        c = self.consents.get((patient, requester))
        covering = c if c is not None and c.covers(category, purpose) else None
        if covering is not None and covering.status == _C_ACTIVE and covering.valid_from <= t < covering.valid_until:
            return found, category, covering.consent_id, False
        active_roles = roles if status == ACTIVE else 0
        if purpose == _PURPOSE_EMERGENCY and active_roles & _ROLE_EMERGENCY and active_roles & _PROVIDER_ROLES:
            e = self._usable_emergency(patient, requester, category)
            if e is not None and t < e[1]:
                window = {"emergency_access_id": "0x" + e[2].hex(), "window_block": e[3], "window_until": e[1]}
                found.append(("emergency_access", "break-glass access (review)", window))
                return found, category, e[2], True
        found.append(self._refusal(c, covering, patient, requester, purpose, t))
        return found, category, None, False

    def _refusal(
        self, c: Consent | None, covering: Consent | None, patient: str, requester: str, purpose: int, t: int
    ) -> Finding:
        """Why no consent and no emergency window allowed an access at ``t``."""
        if covering is not None and covering.status == _C_REVOKED:
            evidence = {
                "consent_id": "0x" + covering.consent_id.hex(),
                "revoked_block": covering.revoked_block,
                "revoked_tx": covering.revoked_tx,
            }
            return "access_after_revocation", "consent was revoked before this access", evidence
        if covering is not None and t >= covering.valid_until:
            evidence = {"consent_id": "0x" + covering.consent_id.hex(), "valid_until": covering.valid_until, "t": t}
            return "access_after_expiry", "consent had expired", evidence
        e = self.emergency.get((patient, requester))
        if purpose == _PURPOSE_EMERGENCY and e and t >= e[1]:
            evidence = {"emergency_access_id": "0x" + e[2].hex(), "window_until": e[1], "t": t}
            return "access_after_expiry", "emergency window had ended", evidence
        detail: dict[str, Any] = {"t": t}
        if c is not None:
            detail.update(
                consent_id="0x" + c.consent_id.hex(),
                categories=c.categories,
                purposes=c.purposes,
                valid_from=c.valid_from,
                valid_until=c.valid_until,
            )
        return "entry_without_valid_consent", "no consent covered this access", detail


def _member_findings(requester: str, status: int, roles: int) -> list[Finding]:
    if status == _SUSPENDED:
        return [("access_by_suspended_member", f"requester {requester} was suspended", {})]
    if status != ACTIVE:
        return [("access_by_non_member", f"requester {requester} was not a member", {})]
    if roles & _PROVIDER_ROLES == 0:
        return [("access_by_non_member", f"requester {requester} had no care-provider role", {"roles": roles})]
    return []


_Handler = Callable[[State, Mapping[str, Any], EventRecord, int], None]
_HANDLERS: dict[str, _Handler] = {
    "MemberAdded": State._on_member_added,
    "MemberSuspended": lambda st, a, ev, ts: st._member_status(a, _SUSPENDED),
    "MemberReinstated": lambda st, a, ev, ts: st._member_status(a, ACTIVE),
    "MemberRemoved": lambda st, a, ev, ts: st._member_status(a, _REMOVED),
    "MemberRolesChanged": State._on_roles_changed,
    "ConsentGranted": State._on_consent_granted,
    "ConsentRevoked": State._on_consent_revoked,
    "GuardianSet": State._on_guardian_set,
    "GuardianRemoved": State._on_guardian_removed,
    "EmergencyOptOutSet": State._on_opt_out,
    "EmergencyAccessGranted": State._on_emergency,
    "RecordRegistered": State._on_record_registered,
    "RecordAmended": lambda st, a, ev, ts: st._record_status(bytes(a["previousRecordId"]), _R_AMENDED),
    "RecordRetracted": lambda st, a, ev, ts: st._record_status(bytes(a["recordId"]), R_RETRACTED),
}
