"""MemberRegistry: consortium membership and its M-of-N governance, against a real Hardhat node.

The dev consortium has three admins and a threshold of 2, so every change needs a proposer plus one
more admin: no single key can onboard or suspend an institution.
"""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from node_client import errors
from node_client._client import ChainClient
from node_client._compile import CompileResult
from node_client.contracts import Action, MemberStatus, ProposalStatus
from node_client.deploy import DEV_CONSORTIUM, Ledger, _deploy_one, metadata_hash
from node_client.keys import dev_account
from node_client.vocabulary import ALL_ROLES, Role
from tests.support.chain import Accounts, Chain, h

PROPOSAL_TTL = 7 * 24 * 3600
ZERO_ADDRESS = "0x" + "00" * 20


def addr(value: str) -> str:
    """Addresses decoded from revert data are lower-case; compare checksummed."""
    return to_checksum_address(value)


def funded(ledger: Ledger, label: str) -> LocalAccount:
    """A fresh deterministic account with ETH (rolled back with the test's snapshot)."""
    acct = Account.from_key(h(f"test-account:{label}"))
    ledger.client.w3.provider.make_request("hardhat_setBalance", [acct.address, hex(10**21)])
    return acct


def key_of(label: str) -> bytes:
    """A realistic X25519 public key stand-in (32 bytes)."""
    return h(f"x25519:{label}")


def meta_of(name: str, address: str) -> bytes:
    return metadata_hash({"name": name, "kind": "clinic", "address": to_checksum_address(address)})


def add_member(ledger: Ledger, accounts: Accounts, address: str, roles: int, label: str = "new") -> None:
    ledger.members.enact(
        accounts.admins[:2],
        Action.ADD_MEMBER,
        address,
        arg=int(roles),
        encryption_key=key_of(label),
        metadata_hash=meta_of(label, address),
    )


# ---------------------------------------------------------------- the dev deployment


def test_dev_deployment_has_three_admins_threshold_two_and_seven_members(ledger: Ledger, accounts: Accounts) -> None:
    gov = ledger.members.governance()
    assert (gov.admin_count, gov.threshold, gov.admin_epoch) == (3, 2, 0)
    for admin in accounts.admins:
        assert ledger.members.is_admin(admin.address)
    assert not ledger.members.is_admin(accounts.outsider.address)
    assert not ledger.members.is_admin(accounts.hospital.address)  # members are not admins
    assert ledger.members.proposal_count() == len(DEV_CONSORTIUM)
    assert ledger.members.member_of(accounts.outsider.address).status is MemberStatus.NONE


def test_members_lists_every_added_institution_with_current_state(ledger: Ledger, accounts: Accounts) -> None:
    listed = ledger.members.members()
    assert [m.address for m in listed] == [dev_account(i).address for i, *_ in DEV_CONSORTIUM]
    assert [m.roles for m in listed] == [roles for _, roles, *_ in DEV_CONSORTIUM]
    assert all(m.status is MemberStatus.ACTIVE for m in listed)
    assert all(len(m.encryption_key) == 32 and m.encryption_key != b"\x00" * 32 for m in listed)


def test_members_listing_reflects_suspension_and_does_not_duplicate_a_re_added_member(
    ledger: Ledger, accounts: Accounts
) -> None:
    newcomer = Account.from_key(h("newcomer")).address
    add_member(ledger, accounts, newcomer, Role.CLINIC)
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, accounts.lab.address)
    ledger.members.enact(accounts.admins[:2], Action.REMOVE_MEMBER, newcomer)
    add_member(ledger, accounts, newcomer, Role.LAB, label="again")

    listed = {m.address: m for m in ledger.members.members()}
    assert len(listed) == len(DEV_CONSORTIUM) + 1
    assert [m.address for m in ledger.members.members()].count(newcomer) == 1
    assert listed[accounts.lab.address].status is MemberStatus.SUSPENDED
    assert listed[newcomer].status is MemberStatus.ACTIVE
    assert listed[newcomer].roles == Role.LAB


# ---------------------------------------------------------------- propose / approve / execute


def test_propose_stores_proposal_and_counts_the_proposers_approval(
    ledger: Ledger, accounts: Accounts, chain: Chain
) -> None:
    proposer = accounts.admins[0]
    target = Account.from_key(h("riverside-annex")).address
    key, meta = key_of("annex"), meta_of("Riverside Annex", target)
    count_before = ledger.members.proposal_count()

    pid, result = ledger.members.propose(
        proposer, Action.ADD_MEMBER, target, arg=int(Role.CLINIC), encryption_key=key, metadata_hash=meta
    )

    block_time = ledger.client.block_timestamp(result.block_number)
    assert pid == count_before + 1 == ledger.members.proposal_count()
    (created,) = ledger.members.events_in(result, "ProposalCreated")
    assert created.args == {
        "proposalId": pid,
        "proposer": proposer.address,
        "action": int(Action.ADD_MEMBER),
        "target": target,
        "arg": int(Role.CLINIC),
        "encryptionKey": key,
        "metadataHash": meta,
        "expiresAt": block_time + PROPOSAL_TTL,
    }
    (approved,) = ledger.members.events_in(result, "ProposalApproved")
    assert approved.args == {"proposalId": pid, "admin": proposer.address, "approvals": 1}
    assert created.log_index < approved.log_index

    p = ledger.members.proposal_of(pid)
    assert p.target == target
    assert p.arg == Role.CLINIC
    assert p.action is Action.ADD_MEMBER
    assert p.approvals == 1
    assert p.status is ProposalStatus.PENDING
    assert p.expires_at == block_time + PROPOSAL_TTL
    assert p.admin_epoch == 0
    assert p.proposer == proposer.address
    assert (p.encryption_key, p.metadata_hash) == (key, meta)
    assert ledger.members.has_approved(pid, proposer.address)
    assert not ledger.members.has_approved(pid, accounts.admins[1].address)
    # proposing changes nothing yet
    assert ledger.members.member_of(target).status is MemberStatus.NONE


def test_approve_emits_and_counts_each_admin_once(ledger: Ledger, accounts: Accounts) -> None:
    pid, _ = ledger.members.propose(accounts.admins[0], Action.SUSPEND_MEMBER, accounts.pharmacy.address)
    result = ledger.members.approve(accounts.admins[2], pid)
    (ev,) = ledger.members.events_in(result, "ProposalApproved")
    assert ev.args == {"proposalId": pid, "admin": accounts.admins[2].address, "approvals": 2}
    assert ledger.members.proposal_of(pid).approvals == 2
    assert ledger.members.has_approved(pid, accounts.admins[2].address)


def test_add_member_executes_with_two_of_three_and_sets_the_member(ledger: Ledger, accounts: Accounts) -> None:
    target = Account.from_key(h("eastside-lab")).address
    key, meta = key_of("eastside"), meta_of("Eastside Lab", target)
    pid, _ = ledger.members.propose(
        accounts.admins[0], Action.ADD_MEMBER, target, arg=int(Role.LAB), encryption_key=key, metadata_hash=meta
    )
    ledger.members.approve(accounts.admins[1], pid)

    result = ledger.members.execute(accounts.admins[0], pid)

    (executed,) = ledger.members.events_in(result, "ProposalExecuted")
    assert executed.args == {"proposalId": pid, "executor": accounts.admins[0].address}
    (added,) = ledger.members.events_in(result, "MemberAdded")
    assert added.args == {"member": target, "roles": int(Role.LAB), "encryptionKey": key, "metadataHash": meta}
    assert executed.log_index < added.log_index

    m = ledger.members.member_of(target)
    assert m.status is MemberStatus.ACTIVE
    assert m.roles == Role.LAB
    assert m.since == ledger.client.block_timestamp(result.block_number)
    assert (m.encryption_key, m.metadata_hash) == (key, meta)
    assert ledger.members.is_active(target, int(Role.LAB))
    assert ledger.members.active_roles(target) == Role.LAB
    assert ledger.members.proposal_of(pid).status is ProposalStatus.EXECUTED


def test_any_admin_may_execute_a_sufficiently_approved_proposal(ledger: Ledger, accounts: Accounts) -> None:
    pid, _ = ledger.members.propose(accounts.admins[0], Action.SUSPEND_MEMBER, accounts.clinic.address)
    ledger.members.approve(accounts.admins[1], pid)
    result = ledger.members.execute(accounts.admins[2], pid)  # did not approve, may still execute
    (ev,) = ledger.members.events_in(result, "ProposalExecuted")
    assert ev["executor"] == accounts.admins[2].address
    assert ledger.members.member_of(accounts.clinic.address).status is MemberStatus.SUSPENDED


def test_proposer_alone_cannot_onboard_or_suspend_at_threshold_two(ledger: Ledger, accounts: Accounts) -> None:
    """No single key can onboard or suspend a hospital once the threshold is above 1."""
    admin = accounts.admins[0]
    onboard, _ = ledger.members.propose(
        admin, Action.ADD_MEMBER, accounts.outsider.address, arg=int(Role.HOSPITAL), encryption_key=key_of("rogue")
    )
    suspend, _ = ledger.members.propose(admin, Action.SUSPEND_MEMBER, accounts.hospital.address)

    for pid in (onboard, suspend):
        with pytest.raises(errors.MemberRegistryNotEnoughApprovals) as exc:
            ledger.members.execute(admin, pid)
        assert (exc.value.proposalId, exc.value.approvals, exc.value.threshold) == (pid, 1, 2)

    assert ledger.members.member_of(accounts.outsider.address).status is MemberStatus.NONE
    assert ledger.members.is_active(accounts.hospital.address, int(Role.HOSPITAL))


# ---------------------------------------------------------------- member lifecycle


def test_suspend_keeps_the_member_but_deactivates_every_role(ledger: Ledger, accounts: Accounts) -> None:
    hospital = accounts.hospital.address
    before = ledger.members.member_of(hospital)
    pid, _ = ledger.members.propose(accounts.admins[0], Action.SUSPEND_MEMBER, hospital)
    ledger.members.approve(accounts.admins[1], pid)
    result = ledger.members.execute(accounts.admins[1], pid)

    (ev,) = ledger.members.events_in(result, "MemberSuspended")
    assert ev.args == {"member": hospital}
    m = ledger.members.member_of(hospital)
    assert m.status is MemberStatus.SUSPENDED
    assert (m.roles, m.since, m.encryption_key, m.metadata_hash) == (
        before.roles,
        before.since,
        before.encryption_key,
        before.metadata_hash,
    )
    assert ledger.members.active_roles(hospital) == 0
    for role in (Role.HOSPITAL, Role.EMERGENCY, ALL_ROLES):
        assert not ledger.members.is_active(hospital, int(role))


def test_reinstate_restores_the_suspended_member(ledger: Ledger, accounts: Accounts) -> None:
    lab = accounts.lab.address
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, lab)
    pid, _ = ledger.members.propose(accounts.admins[1], Action.REINSTATE_MEMBER, lab)
    ledger.members.approve(accounts.admins[2], pid)
    result = ledger.members.execute(accounts.admins[1], pid)

    (ev,) = ledger.members.events_in(result, "MemberReinstated")
    assert ev.args == {"member": lab}
    assert ledger.members.member_of(lab).status is MemberStatus.ACTIVE
    assert ledger.members.active_roles(lab) == Role.LAB
    assert ledger.members.is_active(lab, int(Role.LAB))


@pytest.mark.parametrize("suspended_first", [False, True], ids=["active", "suspended"])
def test_remove_member_from_active_or_suspended(ledger: Ledger, accounts: Accounts, suspended_first: bool) -> None:
    pharmacy = accounts.pharmacy.address
    if suspended_first:
        ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, pharmacy)
    pid, _ = ledger.members.propose(accounts.admins[0], Action.REMOVE_MEMBER, pharmacy)
    ledger.members.approve(accounts.admins[2], pid)
    result = ledger.members.execute(accounts.admins[0], pid)

    (ev,) = ledger.members.events_in(result, "MemberRemoved")
    assert ev.args == {"member": pharmacy}
    assert ledger.members.member_of(pharmacy).status is MemberStatus.REMOVED
    assert ledger.members.active_roles(pharmacy) == 0
    assert not ledger.members.is_active(pharmacy, int(Role.PHARMACY))


def test_a_removed_member_can_be_added_again_with_new_roles_and_key(ledger: Ledger, accounts: Accounts) -> None:
    clinic = accounts.clinic.address
    ledger.members.enact(accounts.admins[:2], Action.REMOVE_MEMBER, clinic)
    key, meta = key_of("clinic-v2"), meta_of("Riverside Community Hospital", clinic)
    pid, _ = ledger.members.propose(
        accounts.admins[0],
        Action.ADD_MEMBER,
        clinic,
        arg=int(Role.HOSPITAL | Role.EMERGENCY),
        encryption_key=key,
        metadata_hash=meta,
    )
    ledger.members.approve(accounts.admins[1], pid)
    result = ledger.members.execute(accounts.admins[0], pid)

    (ev,) = ledger.members.events_in(result, "MemberAdded")
    assert ev["member"] == clinic
    m = ledger.members.member_of(clinic)
    assert m.status is MemberStatus.ACTIVE
    assert m.roles == Role.HOSPITAL | Role.EMERGENCY
    assert (m.encryption_key, m.metadata_hash) == (key, meta)
    assert m.since == ledger.client.block_timestamp(result.block_number)


def test_change_roles_emits_previous_and_new_roles(ledger: Ledger, accounts: Accounts) -> None:
    clinic = accounts.clinic.address
    new_roles = int(Role.CLINIC | Role.EMERGENCY)
    pid, _ = ledger.members.propose(accounts.admins[0], Action.CHANGE_ROLES, clinic, arg=new_roles)
    ledger.members.approve(accounts.admins[1], pid)
    result = ledger.members.execute(accounts.admins[0], pid)

    (ev,) = ledger.members.events_in(result, "MemberRolesChanged")
    assert ev.args == {"member": clinic, "previousRoles": int(Role.CLINIC), "roles": new_roles}
    assert ledger.members.member_of(clinic).roles == new_roles
    assert ledger.members.is_active(clinic, int(Role.EMERGENCY))


def test_change_roles_of_a_suspended_member_keeps_it_suspended(ledger: Ledger, accounts: Accounts) -> None:
    lab = accounts.lab.address
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, lab)
    ledger.members.enact(accounts.admins[:2], Action.CHANGE_ROLES, lab, arg=int(Role.LAB | Role.CLINIC))
    m = ledger.members.member_of(lab)
    assert m.status is MemberStatus.SUSPENDED
    assert m.roles == Role.LAB | Role.CLINIC
    assert ledger.members.active_roles(lab) == 0


def test_rotate_encryption_key_updates_only_the_key(ledger: Ledger, accounts: Accounts) -> None:
    hospital = accounts.hospital.address
    before = ledger.members.member_of(hospital)
    new_key = key_of("hospital-2025-rotation")
    pid, _ = ledger.members.propose(accounts.admins[0], Action.ROTATE_ENCRYPTION_KEY, hospital, encryption_key=new_key)
    ledger.members.approve(accounts.admins[1], pid)
    result = ledger.members.execute(accounts.admins[0], pid)

    (ev,) = ledger.members.events_in(result, "EncryptionKeyRotated")
    assert ev.args == {"member": hospital, "encryptionKey": new_key}
    after = ledger.members.member_of(hospital)
    assert after.encryption_key == new_key != before.encryption_key
    assert (after.status, after.roles, after.since, after.metadata_hash) == (
        before.status,
        before.roles,
        before.since,
        before.metadata_hash,
    )


def test_rotate_encryption_key_of_a_suspended_member_is_allowed(ledger: Ledger, accounts: Accounts) -> None:
    lab = accounts.lab.address
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, lab)
    ledger.members.enact(accounts.admins[:2], Action.ROTATE_ENCRYPTION_KEY, lab, encryption_key=key_of("lab-new"))
    assert ledger.members.member_of(lab).encryption_key == key_of("lab-new")


# ---------------------------------------------------------------- isActive / activeRoles


def test_is_active_matches_any_of_the_given_role_bits(ledger: Ledger, accounts: Accounts) -> None:
    hospital = accounts.hospital.address  # HOSPITAL | EMERGENCY
    is_active = ledger.members.is_active
    assert is_active(hospital, int(Role.HOSPITAL))
    assert is_active(hospital, int(Role.EMERGENCY))
    assert is_active(hospital, int(Role.HOSPITAL | Role.EMERGENCY))
    assert is_active(hospital, int(Role.CLINIC | Role.HOSPITAL))  # any-of, not all-of
    assert is_active(hospital, ALL_ROLES)
    assert not is_active(hospital, int(Role.CLINIC))
    assert not is_active(hospital, int(Role.GATEWAY | Role.AUDITOR))
    assert not is_active(hospital, 0)
    assert ledger.members.active_roles(hospital) == Role.HOSPITAL | Role.EMERGENCY
    assert ledger.members.is_active(accounts.gateway.address, int(Role.GATEWAY))
    assert not ledger.members.is_active(accounts.auditor.address, int(Role.HOSPITAL))


def test_unknown_accounts_are_never_active(ledger: Ledger, accounts: Accounts) -> None:
    for account in (accounts.outsider.address, accounts.admins[0].address, ZERO_ADDRESS):
        assert not ledger.members.is_active(account, ALL_ROLES)
        assert ledger.members.active_roles(account) == 0


# ---------------------------------------------------------------- governance changes


def test_add_admin_bumps_epoch_and_the_new_admin_can_govern(ledger: Ledger, accounts: Accounts) -> None:
    newcomer = funded(ledger, "admin-4")
    pid, _ = ledger.members.propose(accounts.admins[0], Action.ADD_ADMIN, newcomer.address)
    ledger.members.approve(accounts.admins[1], pid)
    result = ledger.members.execute(accounts.admins[0], pid)

    (ev,) = ledger.members.events_in(result, "AdminAdded")
    assert ev.args == {"account": newcomer.address}
    assert ledger.members.is_admin(newcomer.address)
    gov = ledger.members.governance()
    assert (gov.admin_count, gov.threshold, gov.admin_epoch) == (4, 2, 1)

    pid2, _ = ledger.members.propose(newcomer, Action.SUSPEND_MEMBER, accounts.pharmacy.address)
    assert ledger.members.proposal_of(pid2).admin_epoch == 1
    ledger.members.approve(accounts.admins[2], pid2)
    ledger.members.execute(newcomer, pid2)
    assert ledger.members.member_of(accounts.pharmacy.address).status is MemberStatus.SUSPENDED


def test_remove_admin_revokes_its_governance_rights(ledger: Ledger, accounts: Accounts) -> None:
    leaving = accounts.admins[2]
    pid, _ = ledger.members.propose(accounts.admins[0], Action.REMOVE_ADMIN, leaving.address)
    ledger.members.approve(accounts.admins[1], pid)
    result = ledger.members.execute(accounts.admins[0], pid)

    (ev,) = ledger.members.events_in(result, "AdminRemoved")
    assert ev.args == {"account": leaving.address}
    assert not ledger.members.is_admin(leaving.address)
    gov = ledger.members.governance()
    assert (gov.admin_count, gov.threshold, gov.admin_epoch) == (2, 2, 1)
    with pytest.raises(errors.MemberRegistryNotAdmin) as exc:
        ledger.members.propose(leaving, Action.SUSPEND_MEMBER, accounts.lab.address)
    assert addr(exc.value.account) == leaving.address


def test_raising_the_threshold_to_three_requires_three_approvals(ledger: Ledger, accounts: Accounts) -> None:
    a0, a1, a2 = accounts.admins
    pid, _ = ledger.members.propose(a0, Action.CHANGE_THRESHOLD, arg=3)
    ledger.members.approve(a1, pid)
    result = ledger.members.execute(a0, pid)
    (ev,) = ledger.members.events_in(result, "ThresholdChanged")
    assert ev.args == {"previousThreshold": 2, "threshold": 3}
    gov = ledger.members.governance()
    assert (gov.admin_count, gov.threshold, gov.admin_epoch) == (3, 3, 1)  # a rule change: new epoch

    suspend, _ = ledger.members.propose(a0, Action.SUSPEND_MEMBER, accounts.hospital.address)
    ledger.members.approve(a1, suspend)
    with pytest.raises(errors.MemberRegistryNotEnoughApprovals) as exc:
        ledger.members.execute(a0, suspend)
    assert (exc.value.proposalId, exc.value.approvals, exc.value.threshold) == (suspend, 2, 3)
    ledger.members.approve(a2, suspend)
    ledger.members.execute(a0, suspend)
    assert ledger.members.member_of(accounts.hospital.address).status is MemberStatus.SUSPENDED


@pytest.mark.parametrize("new_threshold", [1, 3])
def test_changing_the_threshold_makes_pending_proposals_stale(
    ledger: Ledger, accounts: Accounts, new_threshold: int
) -> None:
    """Neither a raised nor a lowered threshold applies to proposals approved under the old rule."""
    a0, a1, a2 = accounts.admins
    pending, _ = ledger.members.propose(a2, Action.SUSPEND_MEMBER, accounts.lab.address)
    ledger.members.enact([a0, a1], Action.CHANGE_THRESHOLD, arg=new_threshold)
    with pytest.raises(errors.MemberRegistryProposalStale) as exc:
        ledger.members.execute(a2, pending)
    assert exc.value.proposalId == pending
    assert ledger.members.member_of(accounts.lab.address).status is MemberStatus.ACTIVE


def test_lowering_the_threshold_to_one_lets_a_single_admin_act(ledger: Ledger, accounts: Accounts) -> None:
    ledger.members.enact(accounts.admins[:2], Action.CHANGE_THRESHOLD, arg=1)
    assert ledger.members.governance().threshold == 1
    pid, _ = ledger.members.propose(accounts.admins[2], Action.SUSPEND_MEMBER, accounts.lab.address)
    ledger.members.execute(accounts.admins[2], pid)
    assert ledger.members.member_of(accounts.lab.address).status is MemberStatus.SUSPENDED


# ---------------------------------------------------------------- cancel


def test_proposer_may_cancel_before_expiry(ledger: Ledger, accounts: Accounts) -> None:
    pid, _ = ledger.members.propose(accounts.admins[1], Action.SUSPEND_MEMBER, accounts.lab.address)
    result = ledger.members.cancel(accounts.admins[1], pid)
    (ev,) = ledger.members.events_in(result, "ProposalCancelled")
    assert ev.args == {"proposalId": pid, "account": accounts.admins[1].address}
    assert ledger.members.proposal_of(pid).status is ProposalStatus.CANCELLED


def test_another_admin_cannot_cancel_before_expiry(ledger: Ledger, accounts: Accounts) -> None:
    pid, _ = ledger.members.propose(accounts.admins[0], Action.SUSPEND_MEMBER, accounts.lab.address)
    ledger.members.approve(accounts.admins[1], pid)  # approving does not make one the proposer
    with pytest.raises(errors.MemberRegistryNotProposer) as exc:
        ledger.members.cancel(accounts.admins[1], pid)
    assert exc.value.proposalId == pid
    assert addr(exc.value.account) == accounts.admins[1].address
    assert ledger.members.proposal_of(pid).status is ProposalStatus.PENDING


def test_any_admin_may_cancel_an_expired_proposal(ledger: Ledger, accounts: Accounts, chain: Chain) -> None:
    pid, _ = ledger.members.propose(accounts.admins[0], Action.SUSPEND_MEMBER, accounts.lab.address)
    chain.advance(PROPOSAL_TTL)
    result = ledger.members.cancel(accounts.admins[2], pid)
    (ev,) = ledger.members.events_in(result, "ProposalCancelled")
    assert ev.args == {"proposalId": pid, "account": accounts.admins[2].address}
    assert ledger.members.proposal_of(pid).status is ProposalStatus.CANCELLED


# ---------------------------------------------------------------- errors: access and arguments


def test_non_admins_cannot_propose_approve_execute_or_cancel(ledger: Ledger, accounts: Accounts) -> None:
    pid, _ = ledger.members.propose(accounts.admins[0], Action.SUSPEND_MEMBER, accounts.lab.address)
    for intruder in (accounts.outsider, accounts.hospital, accounts.regulator):
        attempts = [
            lambda i=intruder: ledger.members.propose(i, Action.SUSPEND_MEMBER, accounts.lab.address),
            lambda i=intruder: ledger.members.approve(i, pid),
            lambda i=intruder: ledger.members.execute(i, pid),
            lambda i=intruder: ledger.members.cancel(i, pid),
        ]
        for attempt in attempts:
            with pytest.raises(errors.MemberRegistryNotAdmin) as exc:
                attempt()
            assert addr(exc.value.account) == intruder.address
    assert ledger.members.proposal_of(pid).approvals == 1


@pytest.mark.parametrize("threshold", [0, 256, 1000])
def test_change_threshold_outside_uint8_range_is_refused_at_propose(
    ledger: Ledger, accounts: Accounts, threshold: int
) -> None:
    with pytest.raises(errors.MemberRegistryInvalidThreshold) as exc:
        ledger.members.propose(accounts.admins[0], Action.CHANGE_THRESHOLD, arg=threshold)
    assert (exc.value.threshold, exc.value.adminCount) == (threshold, 3)


def test_change_threshold_above_admin_count_is_refused_at_execute(ledger: Ledger, accounts: Accounts) -> None:
    pid, _ = ledger.members.propose(accounts.admins[0], Action.CHANGE_THRESHOLD, arg=4)
    ledger.members.approve(accounts.admins[1], pid)
    with pytest.raises(errors.MemberRegistryInvalidThreshold) as exc:
        ledger.members.execute(accounts.admins[0], pid)
    assert (exc.value.threshold, exc.value.adminCount) == (4, 3)
    assert ledger.members.governance().threshold == 2
    assert ledger.members.proposal_of(pid).status is ProposalStatus.PENDING  # the revert undid everything


@pytest.mark.parametrize(
    ("action", "roles"),
    [
        (Action.ADD_MEMBER, 0),
        (Action.ADD_MEMBER, 0x100),  # first undefined bit
        (Action.ADD_MEMBER, int(Role.HOSPITAL) | 0x8000),
        (Action.CHANGE_ROLES, 0),
        (Action.CHANGE_ROLES, 0xFFFF),
    ],
)
def test_zero_or_undefined_role_bits_are_refused(
    ledger: Ledger, accounts: Accounts, action: Action, roles: int
) -> None:
    target = accounts.outsider.address if action is Action.ADD_MEMBER else accounts.clinic.address
    with pytest.raises(errors.MemberRegistryInvalidRoles) as exc:
        ledger.members.propose(accounts.admins[0], action, target, arg=roles, encryption_key=key_of("k"))
    assert exc.value.roles == roles


@pytest.mark.parametrize(
    "action",
    [
        Action.ADD_MEMBER,
        Action.SUSPEND_MEMBER,
        Action.REINSTATE_MEMBER,
        Action.REMOVE_MEMBER,
        Action.CHANGE_ROLES,
        Action.ROTATE_ENCRYPTION_KEY,
        Action.ADD_ADMIN,
        Action.REMOVE_ADMIN,
        Action.TRANSFER_RECORDS,
    ],
)
def test_zero_target_is_refused(ledger: Ledger, accounts: Accounts, action: Action) -> None:
    with pytest.raises(errors.MemberRegistryZeroAddress):
        ledger.members.propose(
            accounts.admins[0], action, ZERO_ADDRESS, arg=int(Role.CLINIC), encryption_key=key_of("k")
        )


@pytest.mark.parametrize("action", [Action.ADD_MEMBER, Action.ROTATE_ENCRYPTION_KEY])
def test_zero_encryption_key_is_refused(ledger: Ledger, accounts: Accounts, action: Action) -> None:
    with pytest.raises(errors.MemberRegistryInvalidEncryptionKey):
        ledger.members.propose(
            accounts.admins[0], action, accounts.clinic.address, arg=int(Role.CLINIC), encryption_key=None
        )


# ---------------------------------------------------------------- errors: member status (checked at execution)


def _execute_expecting_status(
    ledger: Ledger, accounts: Accounts, action: Action, target: str, status: MemberStatus, **kwargs: object
) -> None:
    pid, _ = ledger.members.propose(accounts.admins[0], action, target, **kwargs)
    ledger.members.approve(accounts.admins[1], pid)
    with pytest.raises(errors.MemberRegistryInvalidMemberStatus) as exc:
        ledger.members.execute(accounts.admins[0], pid)
    assert addr(exc.value.member) == to_checksum_address(target)
    assert exc.value.status == status
    assert ledger.members.proposal_of(pid).status is ProposalStatus.PENDING


def test_adding_an_active_member_again_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    _execute_expecting_status(
        ledger,
        accounts,
        Action.ADD_MEMBER,
        accounts.hospital.address,
        MemberStatus.ACTIVE,
        arg=int(Role.HOSPITAL),
        encryption_key=key_of("dup"),
    )


def test_adding_a_suspended_member_again_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, accounts.lab.address)
    _execute_expecting_status(
        ledger,
        accounts,
        Action.ADD_MEMBER,
        accounts.lab.address,
        MemberStatus.SUSPENDED,
        arg=int(Role.LAB),
        encryption_key=key_of("dup"),
    )


def test_suspending_a_suspended_member_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, accounts.hospital.address)
    _execute_expecting_status(
        ledger, accounts, Action.SUSPEND_MEMBER, accounts.hospital.address, MemberStatus.SUSPENDED
    )


def test_suspending_an_unknown_account_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    _execute_expecting_status(ledger, accounts, Action.SUSPEND_MEMBER, accounts.outsider.address, MemberStatus.NONE)


def test_reinstating_an_active_member_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    _execute_expecting_status(ledger, accounts, Action.REINSTATE_MEMBER, accounts.clinic.address, MemberStatus.ACTIVE)


def test_reinstating_a_removed_member_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    ledger.members.enact(accounts.admins[:2], Action.REMOVE_MEMBER, accounts.clinic.address)
    _execute_expecting_status(ledger, accounts, Action.REINSTATE_MEMBER, accounts.clinic.address, MemberStatus.REMOVED)


def test_removing_a_removed_or_unknown_member_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    ledger.members.enact(accounts.admins[:2], Action.REMOVE_MEMBER, accounts.pharmacy.address)
    _execute_expecting_status(ledger, accounts, Action.REMOVE_MEMBER, accounts.pharmacy.address, MemberStatus.REMOVED)
    _execute_expecting_status(ledger, accounts, Action.REMOVE_MEMBER, accounts.outsider.address, MemberStatus.NONE)


def test_changing_roles_of_a_removed_member_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    ledger.members.enact(accounts.admins[:2], Action.REMOVE_MEMBER, accounts.lab.address)
    _execute_expecting_status(
        ledger, accounts, Action.CHANGE_ROLES, accounts.lab.address, MemberStatus.REMOVED, arg=int(Role.CLINIC)
    )


def test_rotating_the_key_of_an_unknown_or_removed_member_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    _execute_expecting_status(
        ledger,
        accounts,
        Action.ROTATE_ENCRYPTION_KEY,
        accounts.outsider.address,
        MemberStatus.NONE,
        encryption_key=key_of("k"),
    )
    ledger.members.enact(accounts.admins[:2], Action.REMOVE_MEMBER, accounts.lab.address)
    _execute_expecting_status(
        ledger,
        accounts,
        Action.ROTATE_ENCRYPTION_KEY,
        accounts.lab.address,
        MemberStatus.REMOVED,
        encryption_key=key_of("k"),
    )


def test_a_failed_execution_leaves_the_proposal_executable_later(ledger: Ledger, accounts: Accounts) -> None:
    """Member state is checked at execution, not at proposal: a premature proposal waits."""
    lab = accounts.lab.address
    reinstate, _ = ledger.members.propose(accounts.admins[0], Action.REINSTATE_MEMBER, lab)
    ledger.members.approve(accounts.admins[1], reinstate)
    with pytest.raises(errors.MemberRegistryInvalidMemberStatus):
        ledger.members.execute(accounts.admins[0], reinstate)
    ledger.members.enact(accounts.admins[1:], Action.SUSPEND_MEMBER, lab)
    ledger.members.execute(accounts.admins[0], reinstate)
    assert ledger.members.member_of(lab).status is MemberStatus.ACTIVE


# ---------------------------------------------------------------- errors: admin set


def test_adding_an_existing_admin_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    pid, _ = ledger.members.propose(accounts.admins[0], Action.ADD_ADMIN, accounts.admins[2].address)
    ledger.members.approve(accounts.admins[1], pid)
    with pytest.raises(errors.MemberRegistryAdminState) as exc:
        ledger.members.execute(accounts.admins[0], pid)
    assert addr(exc.value.account) == accounts.admins[2].address
    assert exc.value.isAdmin is True


def test_removing_a_non_admin_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    pid, _ = ledger.members.propose(accounts.admins[0], Action.REMOVE_ADMIN, accounts.hospital.address)
    ledger.members.approve(accounts.admins[1], pid)
    with pytest.raises(errors.MemberRegistryAdminState) as exc:
        ledger.members.execute(accounts.admins[0], pid)
    assert addr(exc.value.account) == accounts.hospital.address
    assert exc.value.isAdmin is False


def test_removing_an_admin_below_the_threshold_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    a0, a1, a2 = accounts.admins
    ledger.members.enact([a0, a1], Action.REMOVE_ADMIN, a2.address)  # 2 admins, threshold 2: still fine
    pid, _ = ledger.members.propose(a0, Action.REMOVE_ADMIN, a1.address)
    ledger.members.approve(a1, pid)
    with pytest.raises(errors.MemberRegistryAdminUnderflow) as exc:
        ledger.members.execute(a0, pid)
    assert (exc.value.adminCount, exc.value.threshold) == (1, 2)
    assert ledger.members.is_admin(a1.address)


def test_removing_an_admin_when_threshold_equals_admin_count_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    ledger.members.enact(accounts.admins[:2], Action.CHANGE_THRESHOLD, arg=3)
    pid, _ = ledger.members.propose(accounts.admins[0], Action.REMOVE_ADMIN, accounts.admins[2].address)
    for admin in accounts.admins[1:]:
        ledger.members.approve(admin, pid)
    with pytest.raises(errors.MemberRegistryAdminUnderflow) as exc:
        ledger.members.execute(accounts.admins[0], pid)
    assert (exc.value.adminCount, exc.value.threshold) == (2, 3)


# ---------------------------------------------------------------- errors: proposal lifecycle


@pytest.mark.parametrize("proposal_id", [0, 8, 2**64])
def test_unknown_proposals_cannot_be_approved_executed_or_cancelled(
    ledger: Ledger, accounts: Accounts, proposal_id: int
) -> None:
    assert ledger.members.proposal_count() < 8
    admin = accounts.admins[1]
    for op in (ledger.members.approve, ledger.members.execute, ledger.members.cancel):
        with pytest.raises(errors.MemberRegistryUnknownProposal) as exc:
            op(admin, proposal_id)
        assert exc.value.proposalId == proposal_id


def test_an_executed_proposal_cannot_be_executed_approved_or_cancelled_again(
    ledger: Ledger, accounts: Accounts
) -> None:
    pid = ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, accounts.lab.address)
    for admin, op in (
        (accounts.admins[0], ledger.members.execute),
        (accounts.admins[2], ledger.members.approve),
        (accounts.admins[0], ledger.members.cancel),
    ):
        with pytest.raises(errors.MemberRegistryProposalNotPending) as exc:
            op(admin, pid)
        assert (exc.value.proposalId, exc.value.status) == (pid, ProposalStatus.EXECUTED)


def test_a_cancelled_proposal_cannot_be_approved_or_executed(ledger: Ledger, accounts: Accounts) -> None:
    pid, _ = ledger.members.propose(accounts.admins[0], Action.SUSPEND_MEMBER, accounts.lab.address)
    ledger.members.approve(accounts.admins[1], pid)
    ledger.members.cancel(accounts.admins[0], pid)
    for admin, op in (
        (accounts.admins[2], ledger.members.approve),
        (accounts.admins[0], ledger.members.execute),
        (accounts.admins[0], ledger.members.cancel),
    ):
        with pytest.raises(errors.MemberRegistryProposalNotPending) as exc:
            op(admin, pid)
        assert (exc.value.proposalId, exc.value.status) == (pid, ProposalStatus.CANCELLED)
    assert ledger.members.member_of(accounts.lab.address).status is MemberStatus.ACTIVE


def test_a_proposal_expires_after_seven_days(ledger: Ledger, accounts: Accounts, chain: Chain) -> None:
    pid, _ = ledger.members.propose(accounts.admins[0], Action.SUSPEND_MEMBER, accounts.lab.address)
    ledger.members.approve(accounts.admins[1], pid)
    expires_at = ledger.members.proposal_of(pid).expires_at
    chain.advance(PROPOSAL_TTL)
    assert chain.now() >= expires_at
    for admin, op in ((accounts.admins[2], ledger.members.approve), (accounts.admins[0], ledger.members.execute)):
        with pytest.raises(errors.MemberRegistryProposalExpired) as exc:
            op(admin, pid)
        assert (exc.value.proposalId, exc.value.expiresAt) == (pid, expires_at)
    assert ledger.members.member_of(accounts.lab.address).status is MemberStatus.ACTIVE


def test_a_proposal_is_usable_until_the_second_before_it_expires(ledger: Ledger, accounts: Accounts) -> None:
    pid, _ = ledger.members.propose(accounts.admins[0], Action.SUSPEND_MEMBER, accounts.lab.address)
    expires_at = ledger.members.proposal_of(pid).expires_at
    ledger.client.w3.provider.make_request("evm_setNextBlockTimestamp", [expires_at - 1])
    result = ledger.members.approve(accounts.admins[1], pid)
    assert ledger.client.block_timestamp(result.block_number) == expires_at - 1
    # the next block is at expires_at or later: expired, even though the gas estimate may have passed
    with pytest.raises(errors.MemberRegistryProposalExpired) as exc:
        ledger.members.execute(accounts.admins[0], pid)
    assert exc.value.expiresAt == expires_at


def test_a_change_of_the_admin_set_makes_pending_proposals_stale(ledger: Ledger, accounts: Accounts) -> None:
    a0, a1, a2 = accounts.admins
    ready, _ = ledger.members.propose(a2, Action.SUSPEND_MEMBER, accounts.lab.address)
    ledger.members.approve(a1, ready)  # fully approved under epoch 0
    waiting, _ = ledger.members.propose(a2, Action.SUSPEND_MEMBER, accounts.pharmacy.address)

    newcomer = funded(ledger, "admin-4")
    ledger.members.enact([a0, a1], Action.ADD_ADMIN, newcomer.address)

    with pytest.raises(errors.MemberRegistryProposalStale) as exc:
        ledger.members.execute(a2, ready)
    assert exc.value.proposalId == ready
    with pytest.raises(errors.MemberRegistryProposalStale):
        ledger.members.approve(newcomer, waiting)
    # a stale proposal can still be cleaned up by its proposer
    ledger.members.cancel(a2, waiting)
    assert ledger.members.member_of(accounts.lab.address).status is MemberStatus.ACTIVE


def test_removing_an_admin_makes_its_approvals_worthless(ledger: Ledger, accounts: Accounts) -> None:
    a0, a1, a2 = accounts.admins
    pid, _ = ledger.members.propose(a2, Action.SUSPEND_MEMBER, accounts.hospital.address)
    ledger.members.approve(a1, pid)
    ledger.members.enact([a0, a1], Action.REMOVE_ADMIN, a2.address)
    with pytest.raises(errors.MemberRegistryProposalStale):
        ledger.members.execute(a1, pid)


def test_approving_twice_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    pid, _ = ledger.members.propose(accounts.admins[0], Action.SUSPEND_MEMBER, accounts.lab.address)
    with pytest.raises(errors.MemberRegistryAlreadyApproved) as exc:
        ledger.members.approve(accounts.admins[0], pid)  # the proposer's approval is already counted
    assert exc.value.proposalId == pid
    assert addr(exc.value.admin) == accounts.admins[0].address
    ledger.members.approve(accounts.admins[1], pid)
    with pytest.raises(errors.MemberRegistryAlreadyApproved) as exc:
        ledger.members.approve(accounts.admins[1], pid)
    assert addr(exc.value.admin) == accounts.admins[1].address
    assert ledger.members.proposal_of(pid).approvals == 2


# ---------------------------------------------------------------- member numbers and record custody
# A member's number is what RecordRegistry stores as the holder of the records a gateway registers;
# TransferRecords (M-of-N) hands a departed gateway's records to a successor gateway.


def test_members_are_numbered_in_order_of_admission_and_hold_their_own_number(
    ledger: Ledger, accounts: Accounts
) -> None:
    for number, (index, *_rest) in enumerate(DEV_CONSORTIUM, start=1):
        member = dev_account(index).address
        assert ledger.members.number_of(member) == number
        assert ledger.members.custodian_of(number) == member
    assert ledger.members.number_of(accounts.outsider.address) == 0
    assert ledger.members.custodian_of(0) == ZERO_ADDRESS
    assert ledger.members.custodian_of(len(DEV_CONSORTIUM) + 1) == ZERO_ADDRESS
    newcomer = Account.from_key(h("numbered")).address
    add_member(ledger, accounts, newcomer, Role.CLINIC)
    assert ledger.members.number_of(newcomer) == len(DEV_CONSORTIUM) + 1


def test_gateway_number_is_zero_unless_an_active_gateway(ledger: Ledger, accounts: Accounts) -> None:
    gateway = accounts.gateway.address
    assert ledger.members.gateway_number(gateway) == ledger.members.number_of(gateway) != 0
    assert ledger.members.gateway_number(accounts.hospital.address) == 0  # a member, not a gateway
    assert ledger.members.gateway_number(accounts.outsider.address) == 0
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, gateway)
    assert ledger.members.gateway_number(gateway) == 0


def test_transfer_records_of_a_removed_gateway_to_another_gateway(ledger: Ledger, accounts: Accounts) -> None:
    successor = funded(ledger, "successor")
    add_member(ledger, accounts, successor.address, Role.GATEWAY, "successor")
    gateway = accounts.gateway.address
    number = ledger.members.number_of(gateway)
    ledger.members.enact(accounts.admins[:2], Action.REMOVE_MEMBER, gateway)
    pid, _ = ledger.members.propose(accounts.admins[0], Action.TRANSFER_RECORDS, successor.address, arg=number)
    p = ledger.members.proposal_of(pid)
    assert (p.action, p.target, p.arg) == (Action.TRANSFER_RECORDS, successor.address, number)
    ledger.members.approve(accounts.admins[1], pid)
    result = ledger.members.execute(accounts.admins[0], pid)
    (ev,) = ledger.members.events_in(result, "RecordsTransferred")
    assert ev.args == {"number": number, "from": gateway, "to": successor.address}
    assert ledger.members.custodian_of(number) == successor.address
    assert ledger.members.number_of(successor.address) != number  # the successor keeps its own number too


def test_transfer_records_needs_the_threshold(ledger: Ledger, accounts: Accounts) -> None:
    successor = funded(ledger, "successor")
    add_member(ledger, accounts, successor.address, Role.GATEWAY, "successor")
    number = ledger.members.number_of(accounts.gateway.address)
    ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, accounts.gateway.address)
    pid, _ = ledger.members.propose(accounts.admins[0], Action.TRANSFER_RECORDS, successor.address, arg=number)
    with pytest.raises(errors.MemberRegistryNotEnoughApprovals):
        ledger.members.execute(accounts.admins[0], pid)
    assert ledger.members.custodian_of(number) == accounts.gateway.address


def test_transfer_records_of_an_active_gateway_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    successor = funded(ledger, "successor")
    add_member(ledger, accounts, successor.address, Role.GATEWAY, "successor")
    number = ledger.members.number_of(accounts.gateway.address)
    pid, _ = ledger.members.propose(accounts.admins[0], Action.TRANSFER_RECORDS, successor.address, arg=number)
    ledger.members.approve(accounts.admins[1], pid)
    with pytest.raises(errors.MemberRegistryInvalidMemberStatus) as exc:
        ledger.members.execute(accounts.admins[0], pid)
    assert addr(exc.value.member) == accounts.gateway.address  # the custodian, still in service
    assert exc.value.status == MemberStatus.ACTIVE
    assert ledger.members.custodian_of(number) == accounts.gateway.address


@pytest.mark.parametrize("who", ["hospital", "outsider", "suspended-gateway"])
def test_transfer_records_to_anyone_but_an_active_gateway_is_refused(
    ledger: Ledger, accounts: Accounts, who: str
) -> None:
    number = ledger.members.number_of(accounts.gateway.address)
    if who == "suspended-gateway":
        other = funded(ledger, "other-gateway")
        add_member(ledger, accounts, other.address, Role.GATEWAY, "other")
        ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, other.address)
        target = other.address
    else:
        target = getattr(accounts, who).address
    ledger.members.enact(accounts.admins[:2], Action.REMOVE_MEMBER, accounts.gateway.address)
    pid, _ = ledger.members.propose(accounts.admins[0], Action.TRANSFER_RECORDS, target, arg=number)
    ledger.members.approve(accounts.admins[1], pid)
    with pytest.raises(errors.MemberRegistryNotGateway) as exc:
        ledger.members.execute(accounts.admins[0], pid)
    assert addr(exc.value.account) == target


def test_transfer_records_of_an_unknown_number_is_refused(ledger: Ledger, accounts: Accounts) -> None:
    for number in (0, len(DEV_CONSORTIUM) + 1, 65_535):
        with pytest.raises(errors.MemberRegistryUnknownNumber) as exc:
            ledger.members.propose(accounts.admins[0], Action.TRANSFER_RECORDS, accounts.gateway.address, arg=number)
        assert exc.value.number == number


def test_records_handed_over_can_be_handed_on_when_the_successor_departs(ledger: Ledger, accounts: Accounts) -> None:
    first, second = funded(ledger, "successor-1"), funded(ledger, "successor-2")
    add_member(ledger, accounts, first.address, Role.GATEWAY, "s1")
    add_member(ledger, accounts, second.address, Role.GATEWAY, "s2")
    number = ledger.members.number_of(accounts.gateway.address)
    admins = accounts.admins[:2]
    ledger.members.enact(admins, Action.REMOVE_MEMBER, accounts.gateway.address)
    ledger.members.enact(admins, Action.TRANSFER_RECORDS, first.address, arg=number)
    with pytest.raises(errors.MemberRegistryInvalidMemberStatus):  # the custodian now is `first`, active
        ledger.members.enact(admins, Action.TRANSFER_RECORDS, second.address, arg=number)
    ledger.members.enact(admins, Action.SUSPEND_MEMBER, first.address)
    ledger.members.enact(admins, Action.TRANSFER_RECORDS, second.address, arg=number)
    assert ledger.members.custodian_of(number) == second.address


def test_a_member_back_in_service_gets_a_new_number_if_its_records_were_handed_over(
    ledger: Ledger, accounts: Accounts
) -> None:
    successor = funded(ledger, "successor")
    add_member(ledger, accounts, successor.address, Role.GATEWAY, "successor")
    gateway = accounts.gateway.address
    old = ledger.members.number_of(gateway)
    admins = accounts.admins[:2]
    ledger.members.enact(admins, Action.SUSPEND_MEMBER, gateway)
    ledger.members.enact(admins, Action.TRANSFER_RECORDS, successor.address, arg=old)
    ledger.members.enact(admins, Action.REINSTATE_MEMBER, gateway)
    new = ledger.members.number_of(gateway)
    assert new not in (0, old)
    assert ledger.members.custodian_of(new) == gateway
    assert ledger.members.custodian_of(old) == successor.address
    # a reinstatement that nothing was handed over from keeps the number
    ledger.members.enact(admins, Action.SUSPEND_MEMBER, gateway)
    ledger.members.enact(admins, Action.REINSTATE_MEMBER, gateway)
    assert ledger.members.number_of(gateway) == new


# ---------------------------------------------------------------- constructor


def _deploy_registry(
    client: ChainClient, artifacts: CompileResult, deployer: LocalAccount, admins: list[str], threshold: int
) -> str:
    address, _ = _deploy_one(client, deployer, artifacts, "MemberRegistry", admins, threshold)
    return address


def test_constructor_sets_admins_and_threshold(
    ledger: Ledger, client: ChainClient, artifacts: CompileResult, accounts: Accounts
) -> None:
    from node_client.contracts import MemberRegistry

    admins = [accounts.admins[1].address, accounts.outsider.address]
    address = _deploy_registry(client, artifacts, accounts.admins[0], admins, 1)
    registry = MemberRegistry(client, address)
    gov = registry.governance()
    assert (gov.admin_count, gov.threshold, gov.admin_epoch) == (2, 1, 0)
    assert registry.is_admin(accounts.outsider.address)
    assert not registry.is_admin(accounts.admins[0].address)  # the deployer is not an admin by default
    assert registry.proposal_count() == 0


@pytest.mark.parametrize(
    ("n_admins", "threshold", "expected"),
    [(0, 1, (1, 0)), (0, 0, (0, 0)), (2, 0, (0, 2)), (2, 3, (3, 2))],
    ids=["no-admins", "nothing", "zero-threshold", "threshold-above-admins"],
)
def test_constructor_refuses_an_invalid_threshold(
    ledger: Ledger,
    client: ChainClient,
    artifacts: CompileResult,
    accounts: Accounts,
    n_admins: int,
    threshold: int,
    expected: tuple[int, int],
) -> None:
    admins = [a.address for a in accounts.admins[:n_admins]]
    with pytest.raises(errors.MemberRegistryInvalidThreshold) as exc:
        _deploy_registry(client, artifacts, accounts.admins[0], admins, threshold)
    assert (exc.value.threshold, exc.value.adminCount) == expected


def test_constructor_refuses_duplicate_and_zero_admins(
    ledger: Ledger, client: ChainClient, artifacts: CompileResult, accounts: Accounts
) -> None:
    a0 = accounts.admins[0].address
    with pytest.raises(errors.MemberRegistryAdminState) as exc:
        _deploy_registry(client, artifacts, accounts.admins[0], [a0, a0], 1)
    assert addr(exc.value.account) == a0
    assert exc.value.isAdmin is True
    with pytest.raises(errors.MemberRegistryZeroAddress):
        _deploy_registry(client, artifacts, accounts.admins[0], [a0, ZERO_ADDRESS], 1)
