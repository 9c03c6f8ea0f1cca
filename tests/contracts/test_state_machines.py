"""Stateful property tests (Hypothesis) on the Hardhat node: the consent state machine of the real
ConsentRegistry (grant, revoke, time travel, check) against a Python model, and the M-of-N governance of
the real MemberRegistry. The pure properties (Merkle, health codes, the journal) are in
``tests/client/test_properties.py``.

Example counts are kept modest (the chain machines are the slow part) so the file runs in well under a
minute; ``derandomize`` makes every run explore the same examples (deterministic CI).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from node_client._client import ChainClient
from node_client._exceptions import ContractRevert
from node_client.contracts import Action, ConsentStatus, MemberStatus, ProposalStatus
from node_client.deploy import Manifest
from node_client.keys import dev_account

pytestmark = pytest.mark.slow  # Hypothesis state machines against the chain (~15 s)

CHAIN = settings(
    max_examples=12,
    stateful_step_count=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# ================================================================ stateful: ConsentRegistry vs a model

STEP = 1000  # time moves in steps of 1000 s; validity bounds sit at half steps, so no boundary is ambiguous


class ConsentMachine(RuleBasedStateMachine):
    """Grants, revokes and time travel on the real ConsentRegistry; ``check`` must agree with the model."""

    def __init__(self, client: ChainClient, manifest: Manifest) -> None:
        super().__init__()
        self.client = client
        self.ledger = manifest.connect(client)
        self.snapshot = client.w3.provider.make_request("evm_snapshot", [])["result"]
        self.patients = [dev_account(i) for i in (10, 11)]
        self.grantees = [dev_account(i).address for i in (5, 6)]  # clinic, lab
        self.not_providers = [dev_account(i).address for i in (8, 18)]  # auditor, outsider
        # (patient, grantee) -> (status, categories, purposes, valid_from, valid_until)
        self.model: dict[tuple[str, str], tuple[ConsentStatus, int, int, int, int]] = {}

    def teardown(self) -> None:
        self.client.w3.provider.make_request("evm_revert", [self.snapshot])
        self.client.reset_nonces()

    def now(self) -> int:
        return self.client.block_timestamp()

    @rule(
        p=st.integers(0, 1),
        g=st.integers(0, 1),
        categories=st.integers(1, 2**15 - 1),
        purposes=st.integers(1, 127),
        start=st.integers(-3, 3),
        steps=st.integers(0, 4),
    )
    def grant(self, p: int, g: int, categories: int, purposes: int, start: int, steps: int) -> None:
        patient, grantee = self.patients[p], self.grantees[g]
        now = self.now()
        valid_from = max(0, now + start * STEP + STEP // 2)
        valid_until = valid_from + steps * STEP
        if steps == 0 or valid_until <= now:
            with pytest.raises(ContractRevert) as exc:
                self.ledger.consents.grant(patient, grantee, categories, purposes, valid_from, valid_until)
            assert exc.value.error_name == "ConsentInvalidWindow"
            return
        self.ledger.consents.grant(patient, grantee, categories, purposes, valid_from, valid_until)
        self.model[(patient.address, grantee)] = (ConsentStatus.ACTIVE, categories, purposes, valid_from, valid_until)

    @rule(p=st.integers(0, 1), g=st.integers(0, 1))
    def grant_to_a_non_provider(self, p: int, g: int) -> None:
        now = self.now()
        with pytest.raises(ContractRevert) as exc:
            self.ledger.consents.grant(self.patients[p], self.not_providers[g], 1, 1, now, now + STEP)
        assert exc.value.error_name == "ConsentInvalidGrantee"

    @rule(p=st.integers(0, 1), g=st.integers(0, 1))
    def revoke(self, p: int, g: int) -> None:
        patient, grantee = self.patients[p], self.grantees[g]
        state = self.model.get((patient.address, grantee))
        if state is None or state[0] is not ConsentStatus.ACTIVE:
            with pytest.raises(ContractRevert) as exc:
                self.ledger.consents.revoke(patient, grantee)
            assert exc.value.error_name == "ConsentNotActive"
            return
        self.ledger.consents.revoke(patient, grantee)
        self.model[(patient.address, grantee)] = (ConsentStatus.REVOKED, *state[1:])

    @rule(steps=st.integers(1, 3))
    def time_passes(self, steps: int) -> None:
        self.client.w3.provider.make_request("evm_increaseTime", [steps * STEP])
        self.client.w3.provider.make_request("evm_mine", [])

    @rule(p=st.integers(0, 1), g=st.integers(0, 1), category=st.integers(0, 13), purpose=st.integers(0, 6))
    def check(self, p: int, g: int, category: int, purpose: int) -> None:
        patient, grantee = self.patients[p].address, self.grantees[g]
        now = self.now()
        status, cats, purps, vf, vu = self.model.get((patient, grantee), (ConsentStatus.NONE, 0, 0, 0, 0))
        expected = (
            status is ConsentStatus.ACTIVE
            and bool(cats >> category & 1)
            and bool(purps >> purpose & 1)
            and vf <= now < vu
        )
        result = self.ledger.consents.check(patient, grantee, category, purpose)
        assert result.allowed is expected, (status, bin(cats), bin(purps), vf, now, vu, category, purpose)
        assert not result.emergency

    @invariant()
    def stored_consents_match(self) -> None:
        for (patient, grantee), (status, cats, purps, vf, vu) in self.model.items():
            c = self.ledger.consents.consent_of(patient, grantee)
            assert (c.status, c.categories, c.purposes, c.valid_from, c.valid_until) == (status, cats, purps, vf, vu)


def test_consent_state_machine_against_the_chain(client: ChainClient, manifest: Manifest) -> None:
    run_state_machine_as_test(lambda: ConsentMachine(client, manifest), settings=CHAIN)


# ================================================================ stateful: MemberRegistry governance


class GovernanceMachine(RuleBasedStateMachine):
    """Proposals, approvals and executions by admins (and a non-admin) against an M-of-N model.

    The dev consortium starts with 3 admins and threshold 2. Actions: suspend/reinstate the pharmacy,
    and change the threshold (which bumps the admin epoch and so makes pending proposals stale).
    """

    proposals = Bundle("proposals")

    def __init__(self, client: ChainClient, manifest: Manifest) -> None:
        super().__init__()
        self.client = client
        self.ledger = manifest.connect(client)
        self.members = self.ledger.members
        self.snapshot = client.w3.provider.make_request("evm_snapshot", [])["result"]
        self.admins = [dev_account(i) for i in (0, 1, 2)]
        self.outsider = dev_account(18)
        self.target = dev_account(7).address  # the pharmacy
        self.threshold = 2
        self.epoch = self.members.governance().admin_epoch
        self.status = MemberStatus.ACTIVE
        # proposal id -> [action, arg, approvers, status, epoch]
        self.model: dict[int, list] = {}

    def teardown(self) -> None:
        self.client.w3.provider.make_request("evm_revert", [self.snapshot])
        self.client.reset_nonces()

    def _expect_revert(self, name: str, fn, *args) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(ContractRevert) as exc:
            fn(*args)
        assert exc.value.error_name == name, exc.value

    @rule(
        target=proposals,
        a=st.integers(0, 2),
        action=st.sampled_from([Action.SUSPEND_MEMBER, Action.REINSTATE_MEMBER, Action.CHANGE_THRESHOLD]),
        arg=st.integers(1, 4),
    )
    def propose(self, a: int, action: Action, arg: int) -> int:
        if action is Action.CHANGE_THRESHOLD:
            pid, _ = self.members.propose(self.admins[a], action, arg=arg)
        else:
            pid, _ = self.members.propose(self.admins[a], action, self.target)
            arg = 0
        self.model[pid] = [action, arg, {a}, ProposalStatus.PENDING, self.epoch]
        return pid

    @rule(pid=proposals, a=st.integers(0, 2))
    def approve(self, pid: int, a: int) -> None:
        _action, _arg, approvers, status, epoch = self.model[pid]
        if status is not ProposalStatus.PENDING:
            return self._expect_revert("MemberRegistryProposalNotPending", self.members.approve, self.admins[a], pid)
        if epoch != self.epoch:
            return self._expect_revert("MemberRegistryProposalStale", self.members.approve, self.admins[a], pid)
        if a in approvers:
            return self._expect_revert("MemberRegistryAlreadyApproved", self.members.approve, self.admins[a], pid)
        self.members.approve(self.admins[a], pid)
        approvers.add(a)

    @rule(pid=proposals, a=st.integers(0, 2))
    def execute(self, pid: int, a: int) -> None:
        action, arg, approvers, status, epoch = self.model[pid]
        run = lambda: self.members.execute(self.admins[a], pid)  # noqa: E731
        if status is not ProposalStatus.PENDING:
            return self._expect_revert("MemberRegistryProposalNotPending", run)
        if epoch != self.epoch:
            return self._expect_revert("MemberRegistryProposalStale", run)
        if len(approvers) < self.threshold:
            return self._expect_revert("MemberRegistryNotEnoughApprovals", run)
        if (action is Action.SUSPEND_MEMBER and self.status is not MemberStatus.ACTIVE) or (
            action is Action.REINSTATE_MEMBER and self.status is not MemberStatus.SUSPENDED
        ):
            return self._expect_revert("MemberRegistryInvalidMemberStatus", run)  # stays pending
        if action is Action.CHANGE_THRESHOLD and arg > len(self.admins):
            return self._expect_revert("MemberRegistryInvalidThreshold", run)
        run()
        self.model[pid][3] = ProposalStatus.EXECUTED
        if action is Action.SUSPEND_MEMBER:
            self.status = MemberStatus.SUSPENDED
        elif action is Action.REINSTATE_MEMBER:
            self.status = MemberStatus.ACTIVE
        else:
            self.threshold = arg
            self.epoch += 1

    @rule(pid=proposals)
    def outsider_cannot_govern(self, pid: int) -> None:
        self._expect_revert("MemberRegistryNotAdmin", self.members.approve, self.outsider, pid)
        self._expect_revert("MemberRegistryNotAdmin", self.members.execute, self.outsider, pid)

    @invariant()
    def chain_matches_model(self) -> None:
        gov = self.members.governance()
        assert (gov.threshold, gov.admin_epoch) == (self.threshold, self.epoch)
        assert self.members.member_of(self.target).status is self.status
        for pid, (_action, _arg, approvers, status, _epoch) in self.model.items():
            p = self.members.proposal_of(pid)
            assert (p.status, p.approvals) == (status, len(approvers)), pid


def test_governance_threshold_against_the_chain(client: ChainClient, manifest: Manifest) -> None:
    run_state_machine_as_test(lambda: GovernanceMachine(client, manifest), settings=CHAIN)
