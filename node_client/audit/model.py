"""What the auditor reports: anomalies, verified access rows, the report; and how findings are recorded."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ANOMALY_KINDS",
    "DETAILS",
    "REVIEW_KINDS",
    "AccessRow",
    "Anomaly",
    "AuditReport",
    "Finding",
    "Findings",
    "Origin",
    "Progress",
    "detail_rows",
    "hex0x",
    "unhex",
]

#: Every anomaly kind the auditor reports.
ANOMALY_KINDS: tuple[str, ...] = (
    "entry_without_valid_consent",
    "access_by_non_member",
    "access_by_suspended_member",
    "access_after_revocation",
    "access_after_expiry",
    "emergency_access",
    "access_in_staleness_window",
    "stale_decision",
    "entry_state_block_invalid",
    "record_mismatch",
    "journal_chain_broken",
    "journal_entry_unanchored",
    "anchor_not_backed_by_journal",
    "anchor_inconsistent",
    "journal_root_mismatch",
    "access_logged_by_non_gateway",
    "anchor_by_non_gateway",
    "journal_missing",
    "journal_unmatched",
    "blob_hash_mismatch",
    "blob_missing",
    "release_without_ledger_entry",
    "emergency_reason_mismatch",
    "emergency_reason_unknown",
    "review_signature_invalid",
    "review_note_mismatch",
    "review_chain_broken",
    "review_root_mismatch",
    "review_unanchored",
    "review_of_unknown_emergency",
    "review_by_non_auditor",
)
#: Kinds that are listed for a person to review but are not errors (break-glass access is legitimate; a
#: release in the gateway's staleness window after a change is within what it promises, but the journal
#: cannot tell whether it came before the change; a gateway whose journal the auditor was not given has
#: releases this run could not prove, not ones it found wrong).
REVIEW_KINDS: frozenset[str] = frozenset({"emergency_access", "access_in_staleness_window", "journal_missing"})

#: ``progress(phase, done, total)``; phase is ``"events"`` (blocks), ``"timestamps"`` or ``"verify"``.
Progress = Callable[[str, int, int], None]

#: (kind, message, evidence) of one finding about one access
Finding = tuple[str, str, dict[str, Any]]
#: what an anomaly is about, to tell what a checkpoint keeps: ("block", n), ("entry", i), ("anchor", i), ("run", 0)
Origin = tuple[str, int]

#: ``detail`` values of :func:`node_client.audit.write_outputs`
DETAILS = ("all", "issues")


def hex0x(b: bytes | None) -> str:
    """``0x``-hex of ``b``; ``""`` for ``None``."""
    return "" if b is None else "0x" + b.hex()


def unhex(value: Any, size: int | None = None) -> bytes:
    """Bytes of a ``0x``-hex string (of ``size`` bytes if given); ``ValueError`` otherwise."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"expected 0x-hex, got {value!r}")
    raw = bytes.fromhex(value[2:])
    if size is not None and len(raw) != size:
        raise ValueError(f"expected {size} bytes, got {len(raw)}")
    return raw


@dataclass(slots=True)
class Anomaly:
    """One finding. ``evidence`` holds what a person needs to check it by hand: block, tx hash, entry
    index, roots and proofs (hex), whichever apply."""

    kind: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        """``"review"`` for break-glass accesses, ``"error"`` otherwise."""
        return "review" if self.kind in REVIEW_KINDS else "error"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "severity": self.severity, "message": self.message, "evidence": self.evidence}

    @classmethod
    def from_json(cls, o: Mapping[str, Any]) -> Anomaly:
        return cls(str(o["kind"]), str(o["message"]), dict(o.get("evidence") or {}))


@dataclass(slots=True)
class AccessRow:
    """One ledgered access (a strict ``AccessLogged`` event or a journal entry), as verified."""

    source: str  # "strict" | "journal"
    time: int  # unix seconds: block time (strict) or released_at (journal)
    requester: str
    requester_name: str
    patient: str
    record_id: str
    category: str
    purpose: str
    consent_id: str
    emergency: bool
    access_hash: str
    block: int | None = None  # the AccessLogged block, or the anchor block covering the entry
    tx_hash: str | None = None
    entry_index: int | None = None
    anchored: bool | None = None
    gateway: str | None = None  # the logAccess sender (strict) or the journal's anchoring gateway
    gateway_name: str = ""  # that gateway's member name in the manifest
    state_block: int | None = None  # the block whose state the decision used (journal, version 2)
    status: str = "ok"  # ok | review | anomaly | pending
    kinds: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class AuditReport:
    """What :func:`node_client.audit.replay` found: summary counts, anomalies (errors and review items),
    access rows."""

    chain_id: int
    contracts: dict[str, str]
    from_block: int
    to_block: int
    anomalies: list[Anomaly]
    accesses: list[AccessRow]
    summary: dict[str, Any]
    generated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    #: what ``replay(..., checkpoint=True)`` settled, for ``replay(..., resume=...)`` (see docs/audit.md)
    checkpoint: dict[str, Any] | None = None

    @property
    def errors(self) -> list[Anomaly]:
        return [a for a in self.anomalies if a.severity == "error"]

    @property
    def reviews(self) -> list[Anomaly]:
        return [a for a in self.anomalies if a.severity == "review"]

    @property
    def exit_code(self) -> int:
        """0 when clean (review items allowed), 1 when there is any error anomaly (2 is the CLI's for failures)."""
        return 1 if self.errors else 0

    def kinds(self) -> Counter[str]:
        return Counter(a.kind for a in self.anomalies)

    def to_json(self, detail: str = "all") -> dict[str, Any]:
        """The report as JSON; ``detail="issues"`` lists only the accesses that are not ``ok``."""
        return {
            "format": "hcl-audit-report",
            "version": 1,
            "generated_at": self.generated_at,
            "chain_id": self.chain_id,
            "contracts": self.contracts,
            "from_block": self.from_block,
            "to_block": self.to_block,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "anomalies": [a.to_json() for a in sorted(self.anomalies, key=lambda a: a.severity != "error")],
            "detail": detail,
            "accesses": [r.to_json() for r in detail_rows(self, detail)],
        }


def detail_rows(report: AuditReport, detail: str) -> Iterable[AccessRow]:
    """The report's access rows at ``detail`` (:data:`DETAILS`)."""
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {DETAILS}, not {detail!r}")
    return report.accesses if detail == "all" else [r for r in report.accesses if r.status != "ok"]


class Findings:
    """The anomalies of one run, each with its :data:`Origin` (what a checkpoint keeps depends on it)."""

    __slots__ = ("anomalies", "origins")

    def __init__(self) -> None:
        self.anomalies: list[Anomaly] = []
        self.origins: list[Origin] = []

    def report(self, anomaly: Anomaly, about: Origin) -> None:
        self.anomalies.append(anomaly)
        self.origins.append(about)

    def scoped(self, scope: Mapping[str, Any]) -> Findings:
        """A view adding ``scope`` (which journal, which gateway) to the evidence of what it reports, into
        the same lists: with several journals, an entry index alone does not say whose entry it is."""
        return _Scoped(self, scope) if scope else self

    def record(self, row: AccessRow, found: list[Finding], evidence: dict[str, Any], about: Origin) -> None:
        """Reports each finding about ``row`` (its evidence on top of ``evidence``) and sets the row's
        kinds and status."""
        for kind, message, detail in found:
            self.report(Anomaly(kind, message, {**evidence, **detail}), about)
            row.kinds.append(kind)
        if any(k not in REVIEW_KINDS for k in row.kinds):
            row.status = "anomaly"
        elif row.kinds:
            row.status = "review"


class _Scoped(Findings):
    """:meth:`Findings.scoped`: shares the parent's lists, adds its scope to each anomaly's evidence."""

    __slots__ = ("_scope",)

    def __init__(self, parent: Findings, scope: Mapping[str, Any]) -> None:
        self.anomalies = parent.anomalies
        self.origins = parent.origins
        self._scope = dict(scope)

    def report(self, anomaly: Anomaly, about: Origin) -> None:
        for k, v in self._scope.items():
            anomaly.evidence.setdefault(k, v)
        super().report(anomaly, about)
