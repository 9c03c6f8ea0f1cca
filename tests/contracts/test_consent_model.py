"""Property test: ConsentRegistry.check() agrees with a pure-Python model of the consent rules.

Hypothesis drives random sequences of grants, revocations, time travel, emergency (break-glass)
accesses, emergency opt-out toggles and suspensions/reinstatements of grantees against the real
contracts, and after every step compares ``check()`` with the model for a sample of
(patient, grantee, category, purpose) combinations: one inside each consent's masks and each emergency
window, the rest random (a few outside the vocabulary). At the end of each example it compares every
combination of every (patient, grantee) pair that has a consent or a window, and the stored consents.

The model is written from the documented rules (``IConsentRegistry``), not from the Solidity code:

* a consent allows a read when it is active (granted, not revoked), the category and purpose bits are
  in its masks, ``validFrom <= now < validUntil``, and the grantee is an active data recipient
  (hospital, clinic, lab, pharmacy);
* otherwise an emergency window allows it when the purpose is EMERGENCY, the grantee is an active
  provider with the EMERGENCY capability, ``now < until``, the category is one the window was opened
  for, the patient is not opted out, and the patient has not opted out since the window was opened
  (opting out ends open windows for good);
* categories >= 15 and purposes >= 7 are never allowed.

Every block is placed at a timestamp the model chooses (``evm_setNextBlockTimestamp``) and every
comparison pins the block it asks about, so nothing depends on the wall clock. Each example runs on
its own EVM snapshot, reverted at its end. Time moves by random amounts and, as often, exactly onto
(or next to) the edge of an active consent or window, where off-by-one mistakes live.

Bounded to stay well under a minute on the Hardhat node (each step is a real transaction):
25 examples of up to 15 steps, derandomized so CI runs the same sequences every time.
"""

from __future__ import annotations

import itertools
import random
import sys
from dataclasses import dataclass

import pytest
import requests
from eth_abi import decode, encode
from eth_utils import function_signature_to_4byte_selector, keccak
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from node_client.contracts import Action, ConsentStatus
from node_client.errors import (
    ConsentEmergencyCategoryNotAllowed,
    ConsentEmergencyOptedOut,
    ConsentEmergencyReasonRequired,
    ConsentInvalidCategories,
    ConsentInvalidGrantee,
    ConsentInvalidPurposes,
    ConsentInvalidWindow,
    ConsentNotActive,
    ConsentNotEmergencyMember,
)
from node_client.vocabulary import EMERGENCY_SAFE, Category, Purpose
from tests.support.chain import h

pytestmark = pytest.mark.slow  # Hypothesis against the chain (~25 s)

MINUTE = 60
HOUR = 3600
DAY = 24 * HOUR
EMERGENCY_WINDOW = 4 * HOUR
N_CATEGORIES = 16  # slots: every bit of the uint16 mask (15 is the spare)
N_PURPOSES = 7
SAMPLES_PER_STEP = 16  # check() calls per step, in one JSON-RPC batch

_CHECK_SELECTOR = function_signature_to_4byte_selector("check(address,address,uint8,uint8)")


# ------------------------------------------------------------------------------------------ the model


@dataclass
class ModelConsent:
    categories: int
    purposes: int
    valid_from: int
    valid_until: int
    active: bool
    grant_nonce: int


@dataclass
class ModelWindow:
    categories: int
    opened_at: int
    until: int


def consent_id(patient: str, grantee: str, grant_nonce: int) -> bytes:
    return keccak(encode(["address", "address", "uint64"], [patient, grantee, grant_nonce]))


def emergency_id(patient: str, member: str, until: int) -> bytes:
    return keccak(encode(["string", "address", "address", "uint40"], ["emergency", patient, member, until]))


class ConsentModel:
    """The consent rules, over addresses and the model's clock."""

    def __init__(self, grantees: dict[str, str], emergency_members: set[str]) -> None:
        self.consents: dict[tuple[str, str], ModelConsent] = {}
        self.nonces: dict[tuple[str, str], int] = {}
        self.windows: dict[tuple[str, str], ModelWindow] = {}
        self.opted_out: dict[str, bool] = {}
        self.last_opt_out: dict[str, int] = {}
        self.active: dict[str, bool] = {addr: True for addr in grantees.values()}
        self.emergency_members = emergency_members

    def expected(self, patient: str, grantee: str, category: int, purpose: int, now: int) -> tuple[bool, bytes, bool]:
        refused = (False, b"\x00" * 32, False)
        if category >= N_CATEGORIES or purpose >= N_PURPOSES:
            return refused
        if not self.active.get(grantee, False):
            return refused
        c = self.consents.get((patient, grantee))
        if (
            c is not None
            and c.active
            and c.categories >> category & 1
            and c.purposes >> purpose & 1
            and c.valid_from <= now < c.valid_until
        ):
            return (True, consent_id(patient, grantee, c.grant_nonce), False)
        w = self.windows.get((patient, grantee))
        if (
            purpose == Purpose.EMERGENCY
            and grantee in self.emergency_members
            and w is not None
            and now < w.until
            and w.categories >> category & 1
            and not self.opted_out.get(patient, False)
            and w.opened_at > self.last_opt_out.get(patient, -1)
        ):
            return (True, emergency_id(patient, grantee, w.until), True)
        return refused

    def boundaries(self) -> list[int]:
        """Timestamps where an answer changes: the edges of active consents and of emergency windows."""
        out = []
        for c in self.consents.values():
            if c.active:
                out += [c.valid_from, c.valid_until]
        for w in self.windows.values():
            out.append(w.until)
        return out


# ------------------------------------------------------------------------------------ JSON-RPC batch


def batch_check(
    client, registry: str, queries: list[tuple[str, str, int, int]], block: int
) -> list[tuple[bool, bytes, bool]]:
    """``check()`` for every query at ``block``, in one JSON-RPC batch request."""
    body = [
        {
            "jsonrpc": "2.0",
            "id": i,
            "method": "eth_call",
            "params": [
                {
                    "to": registry,
                    "data": "0x" + (_CHECK_SELECTOR + encode(["address", "address", "uint8", "uint8"], list(q))).hex(),
                },
                hex(block),
            ],
        }
        for i, q in enumerate(queries)
    ]
    reply = requests.post(client.rpc_url, json=body, timeout=60).json()
    by_id = {r["id"]: r for r in reply}
    out = []
    for i in range(len(queries)):
        r = by_id[i]
        assert "result" in r, f"check{queries[i]} failed: {r.get('error')}"
        allowed, cid_, emergency = decode(["bool", "bytes32", "bool"], bytes.fromhex(r["result"][2:]))
        out.append((bool(allowed), bytes(cid_), bool(emergency)))
    return out


# ------------------------------------------------------------------------------------ state machine


def mostly(common: st.SearchStrategy, rare: st.SearchStrategy) -> st.SearchStrategy:
    """``common`` nine times out of ten, else ``rare`` (e.g. an invalid value that must revert)."""
    return st.tuples(st.integers(0, 9), common, rare).map(lambda t: t[2] if t[0] == 9 else t[1])


PATIENT_IDX = st.integers(0, 1)
GRANTEE = st.sampled_from(["hospital", "clinic", "lab"])
CATEGORIES = mostly(
    st.one_of(
        st.integers(1, (1 << N_CATEGORIES) - 1),
        st.sampled_from([1 << Category.ALLERGIES, 1 << Category.LAB_RESULTS | 1 << Category.IMAGING]),
    ),
    st.just(0),
)
PURPOSES = mostly(
    st.one_of(st.integers(1, (1 << N_PURPOSES) - 1), st.sampled_from([1 << Purpose.TREATMENT, 1 << Purpose.EMERGENCY])),
    st.sampled_from([0, 1 << 7]),
)
# validFrom relative to now, in minutes: mostly already in force, sometimes in the future.
FROM_MINUTES = st.tuples(st.integers(0, 2), st.integers(0, 3 * 24 * 60)).map(lambda t: t[1] if t[0] == 2 else -t[1])
# validUntil - validFrom, in minutes: mostly a few hours to two weeks; sometimes empty or reversed.
DURATION_MINUTES = mostly(st.integers(1, 14 * 24 * 60), st.integers(-24 * 60, 0))
GRANT_ARGS_KW = {
    "p": PATIENT_IDX,
    "g": GRANTEE,
    "categories": CATEGORIES,
    "purposes": PURPOSES,
    "from_min": FROM_MINUTES,
    "duration_min": DURATION_MINUTES,
}
GRANT_ARGS = st.fixed_dictionaries(GRANT_ARGS_KW)
SAFE_BITS = [b for b in range(N_CATEGORIES) if EMERGENCY_SAFE >> b & 1]
EMERGENCY_CATEGORIES = mostly(
    st.sets(st.sampled_from(SAFE_BITS), min_size=1).map(lambda bits: sum(1 << b for b in bits)),
    st.sampled_from(
        [0, 1 << Category.GENOMICS, 1 << Category.MENTAL_HEALTH, EMERGENCY_SAFE | 1 << Category.LAB_RESULTS]
    ),
)
# Mostly minutes to hours (inside emergency windows), sometimes days.
ADVANCE = st.one_of(st.integers(1, 10 * MINUTE), st.integers(10 * MINUTE, 3 * HOUR), st.integers(3 * HOUR, 3 * DAY))


class ConsentMachine(RuleBasedStateMachine):
    # set by the test function before the machine runs
    ledger = None
    client = None
    accounts = None

    def __init__(self) -> None:
        super().__init__()
        client = self.client
        self._snapshot = client.w3.provider.make_request("evm_snapshot", [])["result"]
        a = self.accounts
        self.patients = [a.patients[6], a.patients[7]]
        self.grantees = {"hospital": a.hospital.address, "clinic": a.clinic.address, "lab": a.lab.address}
        self.grantee_accounts = {"hospital": a.hospital, "clinic": a.clinic, "lab": a.lab}
        self.model = ConsentModel(self.grantees, {a.hospital.address})
        self.step = 0
        self._compared_block = -1
        self._sync_clock()

    # -------------------------------------------------------------------- helpers

    def _sync_clock(self) -> None:
        latest = self.client.w3.eth.get_block("latest")
        self.block, self.now = int(latest["number"]), int(latest["timestamp"])

    def _next_block_at(self, ts: int) -> None:
        self.client.w3.provider.make_request("evm_setNextBlockTimestamp", [ts])

    def _mine_at(self, ts: int) -> None:
        self._next_block_at(ts)
        self.client.w3.provider.make_request("evm_mine", [])
        self._sync_clock()
        assert self.now == ts

    def _tx_time(self) -> int:
        """Places the next block one second after the model's clock; returns that timestamp."""
        ts = self.now + 1
        self._next_block_at(ts)
        return ts

    def _expect(self, error: type[Exception] | None, fn, *args):
        if error is None:
            return fn(*args)
        with pytest.raises(error):
            fn(*args)
        return None

    def _compare(self, queries: list[tuple[str, str, int, int]]) -> None:
        got = batch_check(self.client, self.ledger.consents.address, queries, self.block)
        for q, result in zip(queries, got, strict=True):
            want = self.model.expected(*q, self.now)
            assert result == want, f"check{q} at t={self.now}: chain {result}, model {want}"

    # -------------------------------------------------------------------- rules

    @initialize(grants=st.lists(GRANT_ARGS, min_size=1, max_size=4))
    def initial_grants(self, grants: list[dict]) -> None:
        """Every example starts with a few grants, so that the other rules have consents to act on."""
        for args in grants:
            self.grant(**args)

    @initialize(p=PATIENT_IDX, categories=EMERGENCY_CATEGORIES)
    def initial_emergency(self, p: int, categories: int) -> None:
        """... and with one patient just brought into the hospital's emergency room."""
        self.emergency_access(p, "hospital", categories, 1)

    @rule(**GRANT_ARGS_KW)
    def grant_rule(self, p: int, g: str, categories: int, purposes: int, from_min: int, duration_min: int) -> None:
        self.grant(p, g, categories, purposes, from_min, duration_min)

    def grant(self, p: int, g: str, categories: int, purposes: int, from_min: int, duration_min: int) -> None:
        patient, grantee = self.patients[p], self.grantees[g]
        valid_from = self.now + from_min * MINUTE
        valid_until = valid_from + duration_min * MINUTE
        t = self._tx_time()
        # the first unmet requirement, in the order IConsentRegistry.grant lists them
        if not self.model.active[grantee]:
            error = ConsentInvalidGrantee
        elif categories == 0 or categories >> N_CATEGORIES:
            error = ConsentInvalidCategories
        elif purposes == 0 or purposes >> N_PURPOSES:
            error = ConsentInvalidPurposes
        elif valid_from >= valid_until or valid_until <= t:
            error = ConsentInvalidWindow
        else:
            error = None
        self._expect(error, self.ledger.consents.grant, patient, grantee, categories, purposes, valid_from, valid_until)
        if error is None:
            key = (patient.address, grantee)
            nonce = self.model.nonces.get(key, 0)
            self.model.consents[key] = ModelConsent(categories, purposes, valid_from, valid_until, True, nonce)
            self.model.nonces[key] = nonce + 1
        self._sync_clock()

    @rule(data=st.data())
    def revoke(self, data) -> None:
        """Revokes, half the time a consent that is active, else any pair (most have nothing to revoke)."""
        active = sorted(k for k, c in self.model.consents.items() if c.active)
        if active and data.draw(st.booleans(), label="an active consent"):
            key = data.draw(st.sampled_from(active), label="pair")
            patient = next(a for a in self.patients if a.address == key[0])
            grantee = key[1]
        else:
            patient = self.patients[data.draw(PATIENT_IDX, label="p")]
            grantee = self.grantees[data.draw(GRANTEE, label="g")]
            key = (patient.address, grantee)
        c = self.model.consents.get(key)
        self._tx_time()
        if c is not None and c.active:
            self.ledger.consents.revoke(patient, grantee)
            c.active = False
            self.model.nonces[key] += 1
        else:
            self._expect(ConsentNotActive, self.ledger.consents.revoke, patient, grantee)
        self._sync_clock()

    @rule(seconds=ADVANCE)
    def advance(self, seconds: int) -> None:
        self._mine_at(self.now + seconds)

    @precondition(lambda self: any(b > self.now for b in self.model.boundaries()))
    @rule(data=st.data())
    def advance_to_edge(self, data) -> None:
        """Moves the clock exactly onto (or next to) an edge of an active consent or emergency window."""
        future = sorted({b for b in self.model.boundaries() if b > self.now})
        edge = data.draw(st.sampled_from(future), label="edge")
        self._mine_at(max(self.now + 1, edge + data.draw(st.sampled_from([0, -1, 1]), label="offset")))

    @rule(
        p=PATIENT_IDX,
        member=st.sampled_from(["hospital", "hospital", "hospital", "clinic"]),
        categories=EMERGENCY_CATEGORIES,
        reason=st.integers(0, 9),
    )
    def emergency_access_rule(self, p: int, member: str, categories: int, reason: int) -> None:
        self.emergency_access(p, member, categories, reason)

    def emergency_access(self, p: int, member: str, categories: int, reason: int) -> None:
        patient, account = self.patients[p], self.grantee_accounts[member]
        reason_hash = h(f"ER admission, case {reason}") if reason else b"\x00" * 32
        t = self._tx_time()
        if account.address not in self.model.emergency_members or not self.model.active[account.address]:
            error = ConsentNotEmergencyMember
        elif categories == 0 or categories & ~EMERGENCY_SAFE:
            error = ConsentEmergencyCategoryNotAllowed
        elif self.model.opted_out.get(patient.address, False):
            error = ConsentEmergencyOptedOut
        elif not reason:
            error = ConsentEmergencyReasonRequired
        else:
            error = None
        result = self._expect(
            error, self.ledger.consents.emergency_access, account, patient.address, categories, reason_hash
        )
        if error is None:
            access_id, _ = result
            assert access_id == emergency_id(patient.address, account.address, t + EMERGENCY_WINDOW)
            self.model.windows[(patient.address, account.address)] = ModelWindow(categories, t, t + EMERGENCY_WINDOW)
        self._sync_clock()

    @rule(data=st.data())
    def toggle_opt_out(self, data) -> None:
        """Opts out (or back in), half the time a patient with an open emergency window."""
        open_windows = sorted({p for (p, _), w in self.model.windows.items() if w.until > self.now})
        if open_windows and data.draw(st.booleans(), label="a patient with an open window"):
            address = data.draw(st.sampled_from(open_windows), label="patient")
            patient = next(a for a in self.patients if a.address == address)
        else:
            patient = self.patients[data.draw(PATIENT_IDX, label="p")]
        opted_out = not self.model.opted_out.get(patient.address, False)
        t = self._tx_time()
        self.ledger.consents.set_emergency_opt_out(patient, opted_out)
        self.model.opted_out[patient.address] = opted_out
        if opted_out:
            self.model.last_opt_out[patient.address] = t
        self._sync_clock()

    @rule(g=GRANTEE)
    def toggle_suspension(self, g: str) -> None:
        grantee = self.grantees[g]
        action = Action.SUSPEND_MEMBER if self.model.active[grantee] else Action.REINSTATE_MEMBER
        self._tx_time()
        self.ledger.members.enact(self.accounts.admins[:2], action, grantee)
        self.model.active[grantee] = action == Action.REINSTATE_MEMBER
        self._sync_clock()

    # -------------------------------------------------------------------- comparisons

    @invariant()
    def check_agrees_with_model(self) -> None:
        if self.block == self._compared_block:
            return  # no new block since the last comparison (a call reverted at estimation): nothing changed
        self._compared_block = self.block
        self.step += 1
        rng = random.Random(self.step)
        patients = [p.address for p in self.patients]
        grantees = list(self.grantees.values())
        queries: list[tuple[str, str, int, int]] = []
        # Interesting combinations first: inside each consent's masks and each emergency window.
        for (p, g), c in self.model.consents.items():
            cats = [b for b in range(N_CATEGORIES) if c.categories >> b & 1]
            purs = [b for b in range(N_PURPOSES) if c.purposes >> b & 1]
            queries.append((p, g, rng.choice(cats), rng.choice(purs)))
        for (p, g), w in self.model.windows.items():
            cats = [b for b in range(N_CATEGORIES) if w.categories >> b & 1]
            queries.append((p, g, rng.choice(cats), Purpose.EMERGENCY))
        # Then random ones, a few of them outside the vocabulary.
        while len(queries) < SAMPLES_PER_STEP:
            cat = rng.choice([*range(N_CATEGORIES), 16, 255]) if rng.random() < 0.1 else rng.randrange(N_CATEGORIES)
            pur = rng.choice([7, 255]) if rng.random() < 0.05 else rng.randrange(N_PURPOSES)
            queries.append((rng.choice(patients), rng.choice(grantees), cat, pur))
        self._compare(queries)

    def teardown(self) -> None:
        try:
            # teardown() runs in hypothesis' `finally:`; after a failed step, skip the final sweep so
            # that the report shows the step's failure rather than a follow-on one.
            if self.step and sys.exc_info()[1] is None:
                # Every combination of every pair that has a consent or an emergency window (for the
                # other pairs every answer is "refused", sampled above), and the stored consents.
                patients = [p.address for p in self.patients]
                grantees = list(self.grantees.values())
                pairs = sorted(set(self.model.consents) | set(self.model.windows))
                self._compare([(p, g, c, u) for p, g in pairs for c in range(N_CATEGORIES) for u in range(N_PURPOSES)])
                for p, g in itertools.product(patients, grantees):
                    stored = self.ledger.consents.consent_of(p, g)
                    c = self.model.consents.get((p, g))
                    assert stored.nonce == self.model.nonces.get((p, g), 0)
                    if c is None:
                        assert stored.status is ConsentStatus.NONE
                    else:
                        assert stored.status is (ConsentStatus.ACTIVE if c.active else ConsentStatus.REVOKED)
                        assert (stored.categories, stored.purposes) == (c.categories, c.purposes)
                        assert (stored.valid_from, stored.valid_until) == (c.valid_from, c.valid_until)
                        assert stored.consent_id == consent_id(p, g, c.grant_nonce)
        finally:
            self.client.w3.provider.make_request("evm_revert", [self._snapshot])
            self.client.reset_nonces()


def test_check_agrees_with_the_consent_model(ledger, client, accounts):
    ConsentMachine.ledger = ledger
    ConsentMachine.client = client
    ConsentMachine.accounts = accounts
    run_state_machine_as_test(
        ConsentMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=15,
            deadline=None,
            derandomize=True,
            database=None,
            print_blob=True,
        ),
    )
