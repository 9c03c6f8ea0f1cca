"""The state replay: events applied block by block in log order, every access judged as it comes.

Strict accesses (``AccessLogged``) are judged at their block; journal entries just before the block their
schedule names (see :mod:`node_client.audit.timing`). Per-entry work is the auditor's hot loop (a million
entries a run): hex strings and slugs of the few distinct records, consents and vocabulary terms are made
once, and a clean verdict is cached per (requester, patient, record, purpose) for as long as no event
changed the state and ``t`` stays inside the run of validity windows it fell in (the only time-dependent
part of a verdict).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from node_client.audit.anchors import JournalView
from node_client.audit.chain import ChainView
from node_client.audit.journal import Entry
from node_client.audit.model import REVIEW_KINDS, AccessRow, Anomaly, Finding, Findings, hex0x
from node_client.audit.state import ACTIVE, ROLE_GATEWAY, State, Windows, run_of
from node_client.blinding import slot_name
from node_client.events import EventRecord
from node_client.vocabulary import PURPOSES, SLOT_COUNT

__all__ = ["Change", "Judge", "Key", "KeyWatch", "slug"]

#: (requester, patient, record id, purpose)
Key = tuple[str, str, bytes, int]
#: (anomaly kind, evidence) of what made a key's verdict unclean at a block
Change = tuple[str, dict[str, Any]]


def slot_slug(slot: int | None) -> str:
    """A record's slot as the auditor, who holds no patient's category key, can name it: an emergency-safe
    slot by its category, any other as ``slot-N`` (which category it holds differs per patient)."""
    if slot is None:
        return ""
    return slot_name(None, slot) if 0 <= slot < SLOT_COUNT else str(slot)


def slug(table: tuple[Any, ...], bit: int | None) -> str:
    """The vocabulary slug of ``bit`` in ``table`` (the number itself when outside it)."""
    if bit is None:
        return ""
    return str(table[bit].slug) if 0 <= bit < len(table) else str(bit)


class KeyWatch:
    """What would change a clean verdict after its block: per key of a version 2 entry, the key's standing
    evaluated at every block whose events touch it (members, consents, emergency windows, opt-outs,
    records): (block, validity windows, change if not clean there)."""

    __slots__ = (
        "_by_pair",
        "_by_patient",
        "_by_record",
        "_by_requester",
        "_state",
        "_timestamps",
        "blocks",
        "changes",
        "ids",
        "keys",
        "touched",
        "wins",
    )

    def __init__(self, state: State, timestamps: Mapping[int, int]) -> None:
        self._state = state
        self._timestamps = timestamps
        self.ids: dict[Key, int] = {}
        self.keys: list[Key] = []
        self.blocks: list[list[int]] = []
        self.wins: list[list[Windows]] = []
        self.changes: list[list[Change | None]] = []
        self._by_requester: dict[str, list[int]] = defaultdict(list)
        self._by_pair: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._by_patient: dict[str, list[int]] = defaultdict(list)
        self._by_record: dict[bytes, list[int]] = defaultdict(list)
        self.touched: set[int] = set()

    def evaluate(self, kid: int, block: int) -> None:
        req, pat, rid, pur = self.keys[kid]
        w = self._state.windows(req, pat, rid, pur)
        t = self._timestamps[block]
        change: Change | None = None
        if run_of(w, t) is None:
            found, *_ = self._state.authorize(req, pat, rid, pur, t)
            errs = [f for f in found if f[0] not in REVIEW_KINDS]
            change = (errs[0][0], errs[0][2]) if errs else ("entry_without_valid_consent", {})
        self.blocks[kid].append(block)
        self.wins[kid].append(w)
        self.changes[kid].append(change)

    def register(self, key: Key, block: int) -> int:
        kid = self.ids[key] = len(self.keys)
        self.keys.append(key)
        self.blocks.append([])
        self.wins.append([])
        self.changes.append([])
        req, pat, rid, _pur = key
        self._by_requester[req].append(kid)
        self._by_pair[(pat, req)].append(kid)
        self._by_patient[pat].append(kid)
        self._by_record[rid].append(kid)
        self.evaluate(kid, block)
        return kid

    def touch(self, e: EventRecord) -> None:
        """Notes the keys whose standing event ``e`` may change (evaluated by :meth:`flush`)."""
        n = e.name
        a = e.args
        if n.startswith("Member"):
            ks = self._by_requester.get(a["member"])
        elif n in ("ConsentGranted", "ConsentRevoked"):
            ks = self._by_pair.get((a["patient"], a["grantee"]))
        elif n == "EmergencyAccessGranted":
            ks = self._by_pair.get((a["patient"], a["member"]))
        elif n == "EmergencyOptOutSet":
            ks = self._by_patient.get(a["patient"])
        elif n in ("RecordRegistered", "RecordRetracted"):
            ks = self._by_record.get(bytes(a["recordId"]))
        elif n == "RecordAmended":
            ks = self._by_record.get(bytes(a["previousRecordId"]))
        else:
            return
        if ks:
            self.touched.update(ks)

    def flush(self, block: int) -> None:
        """Evaluates the touched keys at ``block`` (all of whose events are applied)."""
        if self.touched:
            for kid in self.touched:
                self.evaluate(kid, block)
            self.touched.clear()


class Judge:
    """Replays the events onto ``state`` and judges every strict access and the entries of every journal
    (``jvs``, one per gateway; an entry is ``(j, i)``: entry ``i`` of journal ``j``); the rows and findings
    it makes are in :attr:`rows` and the ``findings`` given."""

    def __init__(
        self,
        chain: ChainView,
        jvs: Sequence[JournalView],
        state: State,
        names: Mapping[str, str],
        findings: Findings,
        *,
        anchor_grace: int,
    ) -> None:
        self.chain, self.jvs, self.state, self.names, self.findings = chain, list(jvs), state, names, findings
        self.anchor_grace = anchor_grace
        self.rows: list[AccessRow] = []
        self.entry_rows: list[list[AccessRow | None]] = [[None] * len(jv.entries) for jv in self.jvs]
        self.found = [findings.scoped(jv.scope) for jv in self.jvs]  # per journal: evidence names it
        self.keys = KeyWatch(state, chain.timestamps)
        # clean entries, grouped by (journal, key, evaluation, end of their validity run): the same next change
        self.groups: dict[tuple[int, int, int, int], list[int]] = {}
        self._hex: dict[bytes, str] = {}
        self._cat_slugs = [slot_slug(s) for s in range(SLOT_COUNT)]
        self._purpose_slugs = {i: t.slug for i, t in enumerate(PURPOSES)}
        self._clean: list[dict[Key, tuple[int, int, int, int, list[int]]]] = [{} for _ in self.jvs]
        self._legacy: dict[Key, tuple[int, int, int, int]] = {}
        self._end_ts = chain.end_ts

    def run(self) -> None:
        """All events in order; each journal entry just before the event block its schedule names."""
        pending: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for j, jv in enumerate(self.jvs):
            for i, pos in enumerate(jv.eval_before):
                pending[pos].append((j, i))
        block_index = -1
        last_block: int | None = None
        for e in self.chain.events:
            if e.block_number != last_block:
                if last_block is not None:
                    self.keys.flush(last_block)
                block_index += 1
                last_block = e.block_number
                for j, i in pending.pop(block_index, ()):
                    self.check_entry(j, i)
            self._on_event(e)
        if last_block is not None:
            self.keys.flush(last_block)
        for pos in sorted(pending):
            for j, i in pending[pos]:
                self.check_entry(j, i)

    def _on_event(self, e: EventRecord) -> None:
        ts = self.chain.timestamps[e.block_number]
        if e.name == "AccessLogged":
            self._check_strict(e, ts)
            return
        if e.name == "AccessBatchAnchored":
            self._check_anchorer(e)
        elif self.keys.ids:
            self.keys.touch(e)
        self.state.apply(e, ts)

    def _check_anchorer(self, e: EventRecord) -> None:
        g_status, g_roles = self.state.members.get(e["gateway"], (0, 0))
        if g_status == ACTIVE and g_roles & ROLE_GATEWAY:
            return
        evidence = {
            "block": e.block_number,
            "tx_hash": e.tx_hash,
            "gateway": e["gateway"],
            "anchor_index": int(e["index"]),
        }
        message = f"{e['gateway']} anchored a journal but is not an active gateway"
        self.findings.report(Anomaly("anchor_by_non_gateway", message, evidence), ("block", e.block_number))

    def _check_strict(self, e: EventRecord, ts: int) -> None:
        """An ``AccessLogged``: judged at its block, and its sender must be an active gateway."""
        rid = bytes(e["recordId"])
        purpose = int(e["purpose"])
        found, category, _cid, _emergency = self.state.authorize(e["requester"], e["patient"], rid, purpose, ts)
        sender = self.chain.senders.get(e.tx_hash, "")
        s_status, s_roles = self.state.members.get(sender, (0, 0))
        if s_status != ACTIVE or not s_roles & ROLE_GATEWAY:
            message = f"the transaction that logged the access was sent by {sender}, not an active gateway"
            found.append(
                (
                    "access_logged_by_non_gateway",
                    message,
                    {"sender": sender, "sender_status": s_status, "sender_roles": s_roles},
                )
            )
        row = AccessRow(
            source="strict",
            time=ts,
            requester=e["requester"],
            requester_name=self.names.get(e["requester"], ""),
            patient=e["patient"],
            record_id=hex0x(rid),
            category=slot_slug(category),
            purpose=slug(PURPOSES, purpose),
            consent_id=hex0x(bytes(e["consentId"])),
            emergency=bool(e["emergency"]),
            access_hash=hex0x(bytes(e["accessHash"])),
            block=e.block_number,
            tx_hash=e.tx_hash,
            gateway=sender,
            gateway_name=self.names.get(sender, ""),
        )
        evidence = {
            "block": e.block_number,
            "tx_hash": e.tx_hash,
            "log_index": e.log_index,
            "requester": e["requester"],
            "patient": e["patient"],
            "record_id": row.record_id,
            "purpose": purpose,
            "gateway": sender,
        }
        self.findings.record(row, found, evidence, ("block", e.block_number))
        self.rows.append(row)

    def _hx(self, b: bytes) -> str:
        h = self._hex.get(b)
        if h is None:
            h = self._hex[b] = "0x" + b.hex()
        return h

    def _entry_row(self, jv: JournalView, i: int, en: Entry) -> AccessRow:
        a = jv.anchor_of[i]
        return AccessRow(
            source="journal",
            time=en.released_at // 1000,
            requester=en.requester,
            requester_name=self.names.get(en.requester, ""),
            patient=en.patient,
            record_id=self._hx(en.record_id),
            category="",
            purpose=self._purpose_slugs.get(en.purpose) or str(en.purpose),
            consent_id=self._hx(en.consent_id),
            emergency=en.emergency,
            access_hash="0x" + en.access_hash.hex(),
            block=a.block_number if a else None,
            tx_hash=a.tx_hash if a else None,
            entry_index=en.position,
            anchored=a is not None,
            gateway=jv.gateway,
            gateway_name=self.names.get(jv.gateway, "") if jv.gateway else "",
            state_block=en.state_block,
        )

    def check_entry(self, j: int, i: int) -> None:
        """Judges entry ``i`` of journal ``j`` against the state as it stands now (its schedule's moment)."""
        jv = self.jvs[j]
        en = jv.entries[i]
        b = en.state_block
        row = self.entry_rows[j][i] = self._entry_row(jv, i, en)
        self.rows.append(row)
        if b is not None and i in jv.invalid:
            problem = (
                "entry_state_block_invalid",
                jv.invalid[i],
                {"chain_block_hash": hex0x(self.chain.hashes.get(b))},
            )
            self.found[j].record(row, [problem], en.evidence(row), ("entry", en.position))
            return
        if b is not None and b > self.chain.end:  # decided on a block after the audited range: a later run
            row.status = "pending"
            return
        found, category, t = self._judge_v1(en, jv.skew) if b is None else self._judge_v2(j, i, en, b)
        row.category = (
            self._cat_slugs[category] if category is not None and 0 <= category < SLOT_COUNT else slot_slug(category)
        )
        if jv.anchor_of[i] is None:
            if t <= self._end_ts - self.anchor_grace:
                found.append(("journal_entry_unanchored", "no anchored root covers this entry", {}))
            else:
                row.status = "pending"
        if found:
            self.found[j].record(row, found, en.evidence(row), ("entry", en.position))

    def _judge_v1(self, en: Entry, skew: int) -> tuple[list[Finding], int | None, int]:
        """A version 1 entry, at ``released_at`` plus its gateway's clock skew."""
        key = (en.requester, en.patient, en.record_id, en.purpose)
        t = en.released_at // 1000 + skew
        st = self.state
        hit = self._legacy.get(key)
        if hit is not None and hit[0] == st.version and hit[1] <= t < hit[2]:
            return [], hit[3], t
        found, category, _cid, emergency = st.authorize(en.requester, en.patient, en.record_id, en.purpose, t)
        if not found and not emergency and category is not None:
            c = st.consents[(en.patient, en.requester)]
            self._legacy[key] = (st.version, c.valid_from, c.valid_until, category)
        return found, category, t

    def _judge_v2(self, j: int, i: int, en: Entry, b: int) -> tuple[list[Finding], int | None, int]:
        """A version 2 entry, at its state block's timestamp; a clean one joins the group of its journal's
        entries that the same later change would affect (judged by
        :func:`node_client.audit.timing.timing_verdicts`, against that journal's own timeline)."""
        key = (en.requester, en.patient, en.record_id, en.purpose)
        t = self.chain.timestamps[b]
        st = self.state
        clean = self._clean[j]
        hit = clean.get(key)
        if hit is not None and hit[0] == st.version and hit[1] <= t < hit[2]:
            hit[4].append(i)
            return [], hit[3], t
        found, category, _cid, emergency = st.authorize(en.requester, en.patient, en.record_id, en.purpose, t)
        if category is not None and all(f[0] in REVIEW_KINDS for f in found):
            kid = self.keys.ids.get(key)
            if kid is None:
                kid = self.keys.register(key, b)
            seg = len(self.keys.blocks[kid]) - 1
            run = run_of(self.keys.wins[kid][seg], t) or (t, t + 1)
            group = self.groups.setdefault((j, kid, seg, run[1]), [])
            group.append(i)
            if not found and not emergency:
                clean[key] = (st.version, run[0], run[1], category, group)
        return found, category, t
