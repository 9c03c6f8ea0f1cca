"""EIP-712 signed consents: grantBySig / revokeBySig on-chain, and node_client.signing off-chain.

Deadlines are always derived from the chain's clock (``chain.now()``), never from the wall clock: the
test chain's clock runs ahead of it whenever a test advances time.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys import keys
from eth_utils import keccak

from node_client import signing
from node_client.contracts import Action, ConsentStatus
from node_client.deploy import _deploy_one
from node_client.errors import (
    ConsentExpiredSignature,
    ConsentInvalidCategories,
    ConsentInvalidNonce,
    ConsentInvalidSignature,
    ConsentInvalidSigner,
    ConsentNotActive,
    ConsentUnauthorizedSubmitter,
    SignatureError,
)
from node_client.signing import ConsentGrant, ConsentRevoke, Domain, SignedMessage
from node_client.vocabulary import Category, Purpose, category_mask, purpose_mask

DAY = 24 * 3600
HOUR = 3600
CHAIN_ID = 31337

# Allergies + lab results for treatment, as in docs/consent-signing.md.
CATEGORIES = category_mask([Category.ALLERGIES, Category.LAB_RESULTS])
PURPOSES = purpose_mask([Purpose.TREATMENT])

# The contract's type strings, copied from ConsentRegistry.sol (independent of node_client.signing).
GRANT_TYPE = (
    "ConsentGrant(address patient,address grantee,uint16 categories,uint8 purposes,uint40 validFrom,"
    "uint40 validUntil,uint64 nonce,uint256 deadline)"
)
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"


def set_next_timestamp(client, ts: int) -> None:
    client.w3.provider.make_request("evm_setNextBlockTimestamp", [ts])


@pytest.fixture
def domain(ledger) -> Domain:
    return ledger.consents.domain()


@pytest.fixture
def patient(accounts):
    return accounts.patients[0]


@pytest.fixture
def hospital(accounts):
    return accounts.hospital


def build_grant(
    ledger,
    chain,
    patient: str,
    grantee: str,
    *,
    categories: int = CATEGORIES,
    purposes: int = PURPOSES,
    deadline: int | None = None,
    nonce: int | None = None,
) -> ConsentGrant:
    """A 30-day consent starting now; its signature valid for one hour of chain time."""
    now = chain.now()
    return ledger.consents.build_grant(
        patient,
        grantee,
        categories,
        purposes,
        now,
        now + 30 * DAY,
        deadline=now + HOUR if deadline is None else deadline,
        nonce=nonce,
    )


def build_revoke(ledger, chain, patient: str, grantee: str, *, deadline: int | None = None) -> ConsentRevoke:
    deadline = chain.now() + HOUR if deadline is None else deadline
    return ledger.consents.build_revoke(patient, grantee, deadline=deadline)


def expected_digest(domain: Domain, g: ConsentGrant) -> bytes:
    """The EIP-712 digest computed from the Solidity type strings with plain ABI encoding."""
    domain_separator = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                keccak(text=DOMAIN_TYPE),
                keccak(text=domain.name),
                keccak(text=domain.version),
                domain.chain_id,
                domain.verifying_contract,
            ],
        )
    )
    struct_hash = keccak(
        encode(
            ["bytes32", "address", "address", "uint16", "uint8", "uint40", "uint40", "uint64", "uint256"],
            [
                keccak(text=GRANT_TYPE),
                g.patient,
                g.grantee,
                g.categories,
                g.purposes,
                g.valid_from,
                g.valid_until,
                g.nonce,
                g.deadline,
            ],
        )
    )
    return keccak(b"\x19\x01" + domain_separator + struct_hash)


# --------------------------------------------------------------------------------------------- domain


def test_domain_is_read_from_the_contract(ledger, domain):
    assert domain.name == "HealthCode Ledger"
    assert domain.version == "1"
    assert domain.chain_id == CHAIN_ID
    assert domain.verifying_contract == ledger.consents.address
    fields, *_rest, salt, extensions = ledger.consents.contract.functions.eip712Domain().call()
    assert fields == b"\x0f"  # name, version, chainId, verifyingContract; no salt, no extensions
    assert salt == b"\x00" * 32 and extensions == []


# ----------------------------------------------------------------------------------- signed grants


def test_patient_signed_grant_is_accepted(ledger, chain, domain, patient, hospital):
    grant = build_grant(ledger, chain, patient.address, hospital.address)
    assert grant.nonce == 0
    signed = signing.sign(patient, domain, grant)

    consent_id, result = ledger.consents.grant_by_sig(hospital, signed)  # the grantee submits

    (ev,) = ledger.consents.events_in(result, "ConsentGranted")
    assert ev["consentId"] == consent_id
    assert ev["patient"] == patient.address
    assert ev["grantee"] == hospital.address
    assert (ev["categories"], ev["purposes"]) == (CATEGORIES, PURPOSES)
    assert (ev["validFrom"], ev["validUntil"]) == (grant.valid_from, grant.valid_until)
    assert ev["signer"] == patient.address
    consent = ledger.consents.consent_of(patient.address, hospital.address)
    assert consent.status is ConsentStatus.ACTIVE and consent.consent_id == consent_id and consent.nonce == 1
    check = ledger.consents.check(patient.address, hospital.address, Category.LAB_RESULTS, Purpose.TREATMENT)
    assert check.allowed and check.consent_id == consent_id


def test_any_active_member_may_submit_a_signed_grant(ledger, chain, domain, patient, accounts):
    # The gateway relays a code the patient showed at the lab's reception.
    grant = build_grant(ledger, chain, patient.address, accounts.lab.address)
    ledger.consents.grant_by_sig(accounts.gateway, signing.sign(patient, domain, grant))
    assert ledger.consents.consent_of(patient.address, accounts.lab.address).status is ConsentStatus.ACTIVE


def test_guardian_signed_grant_is_accepted(ledger, chain, domain, accounts, hospital):
    child, parent = accounts.patients[0], accounts.patients[1]
    ledger.consents.set_guardian(child, parent.address, chain.now() + 365 * DAY)
    grant = build_grant(ledger, chain, child.address, hospital.address)

    consent_id, result = ledger.consents.grant_by_sig(hospital, signing.sign(parent, domain, grant))

    (ev,) = ledger.consents.events_in(result, "ConsentGranted")
    assert ev["patient"] == child.address
    assert ev["signer"] == parent.address
    assert ledger.consents.consent_of(child.address, hospital.address).consent_id == consent_id


def test_patient_and_guardian_signed_revocations(ledger, chain, domain, accounts, hospital):
    child, parent, stranger = accounts.patients[0], accounts.patients[1], accounts.outsider
    ledger.consents.set_guardian(child, parent.address, chain.now() + 365 * DAY)

    consent_id, _ = ledger.consents.grant_by_sig(
        hospital, signing.sign(child, domain, build_grant(ledger, chain, child.address, hospital.address))
    )
    # A revocation may be relayed by anyone, members or not: here a non-member.
    result = ledger.consents.revoke_by_sig(
        stranger, signing.sign(parent, domain, build_revoke(ledger, chain, child.address, hospital.address))
    )
    (ev,) = ledger.consents.events_in(result, "ConsentRevoked")
    assert (ev["consentId"], ev["patient"], ev["grantee"], ev["signer"]) == (
        consent_id,
        child.address,
        hospital.address,
        parent.address,
    )
    assert not ledger.consents.check(child.address, hospital.address, Category.ALLERGIES, Purpose.TREATMENT).allowed

    second_id, _ = ledger.consents.grant(child, hospital.address, CATEGORIES, PURPOSES, chain.now(), chain.now() + DAY)
    # The patient relays its own revocation (it is not a member either).
    result = ledger.consents.revoke_by_sig(
        child, signing.sign(child, domain, build_revoke(ledger, chain, child.address, hospital.address))
    )
    (ev,) = ledger.consents.events_in(result, "ConsentRevoked")
    assert (ev["consentId"], ev["signer"]) == (second_id, child.address)
    assert ledger.consents.consent_of(child.address, hospital.address).status is ConsentStatus.REVOKED


def test_revoke_by_sig_needs_an_active_consent(ledger, chain, domain, patient, hospital, accounts):
    signed = signing.sign(patient, domain, build_revoke(ledger, chain, patient.address, hospital.address))
    with pytest.raises(ConsentNotActive):
        ledger.consents.revoke_by_sig(accounts.outsider, signed)


# ----------------------------------------------------------------------------------- domain binding


@pytest.mark.parametrize(
    "wrong",
    [
        lambda d, ledger: Domain(chain_id=1, verifying_contract=d.verifying_contract),  # Ethereum mainnet
        lambda d, ledger: Domain(chain_id=d.chain_id, verifying_contract=ledger.records.address),
        lambda d, ledger: Domain(chain_id=d.chain_id, verifying_contract=d.verifying_contract, version="2"),
        lambda d, ledger: Domain(chain_id=d.chain_id, verifying_contract=d.verifying_contract, name="HealthCode"),
    ],
    ids=["chain-id-1", "other-contract", "version-2", "other-name"],
)
def test_signature_under_another_domain_is_refused(ledger, chain, domain, patient, hospital, wrong):
    grant = build_grant(ledger, chain, patient.address, hospital.address)
    signed = signing.sign(patient, wrong(domain, ledger), grant)
    with pytest.raises(ConsentInvalidSignature) as info:
        ledger.consents.grant_by_sig(hospital, signed)
    assert info.value.signer == patient.address
    assert ledger.consents.nonces(patient.address, hospital.address) == 0


def test_revocation_under_another_chain_id_is_refused(ledger, chain, domain, patient, hospital, accounts):
    ledger.consents.grant(patient, hospital.address, CATEGORIES, PURPOSES, chain.now(), chain.now() + DAY)
    wrong = Domain(chain_id=1, verifying_contract=domain.verifying_contract)
    signed = signing.sign(patient, wrong, build_revoke(ledger, chain, patient.address, hospital.address))
    with pytest.raises(ConsentInvalidSignature):
        ledger.consents.revoke_by_sig(accounts.outsider, signed)


# ------------------------------------------------------------------------------------------ deadline


def test_deadline_already_below_chain_time(ledger, chain, domain, patient, hospital):
    deadline = chain.now() - 1
    signed = signing.sign(
        patient, domain, build_grant(ledger, chain, patient.address, hospital.address, deadline=deadline)
    )
    with pytest.raises(ConsentExpiredSignature) as info:
        ledger.consents.grant_by_sig(hospital, signed)
    assert info.value.deadline == deadline


def test_deadline_passes_while_the_code_waits(ledger, chain, domain, patient, hospital):
    deadline = chain.now() + 15 * 60  # a 15-minute code
    signed = signing.sign(
        patient, domain, build_grant(ledger, chain, patient.address, hospital.address, deadline=deadline)
    )
    chain.advance(16 * 60)
    with pytest.raises(ConsentExpiredSignature) as info:
        ledger.consents.grant_by_sig(hospital, signed)
    assert info.value.deadline == deadline


def test_deadline_is_inclusive(ledger, chain, client, domain, patient, hospital):
    deadline = chain.now() + 600
    signed = signing.sign(
        patient, domain, build_grant(ledger, chain, patient.address, hospital.address, deadline=deadline)
    )
    set_next_timestamp(client, deadline)
    _, result = ledger.consents.grant_by_sig(hospital, signed)
    assert client.block_timestamp(result.block_number) == deadline


def test_expired_revocation_is_refused(ledger, chain, domain, patient, hospital, accounts):
    ledger.consents.grant(patient, hospital.address, CATEGORIES, PURPOSES, chain.now(), chain.now() + DAY)
    signed = signing.sign(
        patient, domain, build_revoke(ledger, chain, patient.address, hospital.address, deadline=chain.now() + 60)
    )
    chain.advance(120)
    with pytest.raises(ConsentExpiredSignature):
        ledger.consents.revoke_by_sig(accounts.outsider, signed)


# --------------------------------------------------------------------------------------------- nonce


def test_replaying_a_signed_grant_is_refused(ledger, chain, domain, patient, hospital):
    signed = signing.sign(patient, domain, build_grant(ledger, chain, patient.address, hospital.address))
    ledger.consents.grant_by_sig(hospital, signed)
    with pytest.raises(ConsentInvalidNonce) as info:
        ledger.consents.grant_by_sig(hospital, signed)
    assert (info.value.nonce, info.value.expected) == (0, 1)


def test_grant_signed_before_a_later_grant_is_refused(ledger, chain, domain, patient, hospital):
    stale = signing.sign(patient, domain, build_grant(ledger, chain, patient.address, hospital.address))
    # Meanwhile the patient grants directly (e.g. narrower terms in the app).
    ledger.consents.grant(
        patient, hospital.address, category_mask([Category.ALLERGIES]), PURPOSES, chain.now(), chain.now() + DAY
    )
    with pytest.raises(ConsentInvalidNonce) as info:
        ledger.consents.grant_by_sig(hospital, stale)
    assert (info.value.nonce, info.value.expected) == (0, 1)
    assert ledger.consents.consent_of(patient.address, hospital.address).categories == category_mask(
        [Category.ALLERGIES]
    )


def test_grant_signed_before_a_revoke_is_refused(ledger, chain, domain, patient, hospital):
    ledger.consents.grant(patient, hospital.address, CATEGORIES, PURPOSES, chain.now(), chain.now() + DAY)
    stale = signing.sign(patient, domain, build_grant(ledger, chain, patient.address, hospital.address))
    assert stale.message.nonce == 1
    ledger.consents.revoke(patient, hospital.address)  # the patient changes their mind
    with pytest.raises(ConsentInvalidNonce) as info:
        ledger.consents.grant_by_sig(hospital, stale)
    assert (info.value.nonce, info.value.expected) == (1, 2)
    assert ledger.consents.consent_of(patient.address, hospital.address).status is ConsentStatus.REVOKED


def test_revoke_signed_before_a_later_grant_is_refused(ledger, chain, domain, patient, hospital, accounts):
    ledger.consents.grant(patient, hospital.address, CATEGORIES, PURPOSES, chain.now(), chain.now() + DAY)
    stale = signing.sign(patient, domain, build_revoke(ledger, chain, patient.address, hospital.address))
    ledger.consents.grant(patient, hospital.address, CATEGORIES, PURPOSES, chain.now(), chain.now() + 2 * DAY)
    with pytest.raises(ConsentInvalidNonce) as info:
        ledger.consents.revoke_by_sig(accounts.outsider, stale)
    assert (info.value.nonce, info.value.expected) == (1, 2)


def test_grant_with_a_future_nonce_is_refused(ledger, chain, domain, patient, hospital):
    signed = signing.sign(patient, domain, build_grant(ledger, chain, patient.address, hospital.address, nonce=1))
    with pytest.raises(ConsentInvalidNonce) as info:
        ledger.consents.grant_by_sig(hospital, signed)
    assert (info.value.nonce, info.value.expected) == (1, 0)


def test_a_signed_grant_with_invalid_terms_consumes_no_nonce(ledger, chain, domain, patient, hospital):
    signed = signing.sign(patient, domain, build_grant(ledger, chain, patient.address, hospital.address, categories=0))
    with pytest.raises(ConsentInvalidCategories):
        ledger.consents.grant_by_sig(hospital, signed)
    assert ledger.consents.nonces(patient.address, hospital.address) == 0


# -------------------------------------------------------------------------------------------- signer


def test_signature_by_someone_else_claiming_to_be_the_patient(ledger, chain, domain, patient, hospital, accounts):
    grant = build_grant(ledger, chain, patient.address, hospital.address)
    forged = signing.sign(accounts.patients[3], domain, grant)
    claimed = SignedMessage(grant, patient.address, forged.signature)
    with pytest.raises(ConsentInvalidSignature) as info:
        ledger.consents.grant_by_sig(hospital, claimed)
    assert info.value.signer == patient.address


def test_signer_who_is_neither_patient_nor_guardian(ledger, chain, domain, patient, hospital, accounts):
    stranger = accounts.patients[3]
    signed = signing.sign(stranger, domain, build_grant(ledger, chain, patient.address, hospital.address))
    with pytest.raises(ConsentInvalidSigner) as info:
        ledger.consents.grant_by_sig(hospital, signed)
    assert (info.value.signer, info.value.patient) == (stranger.address, patient.address)


def test_the_grantee_cannot_sign_for_the_patient(ledger, chain, domain, patient, hospital):
    signed = signing.sign(hospital, domain, build_grant(ledger, chain, patient.address, hospital.address))
    with pytest.raises(ConsentInvalidSigner):
        ledger.consents.grant_by_sig(hospital, signed)


def test_expired_guardian_may_no_longer_sign(ledger, chain, client, domain, accounts, hospital):
    child, parent = accounts.patients[0], accounts.patients[1]
    guardian_until = chain.now() + DAY
    ledger.consents.set_guardian(child, parent.address, guardian_until)
    grant = build_grant(ledger, chain, child.address, hospital.address, deadline=guardian_until + DAY)
    signed = signing.sign(parent, domain, grant)  # signed while still a guardian

    set_next_timestamp(client, guardian_until)  # guardianship ends at guardian_until (exclusive)
    with pytest.raises(ConsentInvalidSigner) as info:
        ledger.consents.grant_by_sig(hospital, signed)
    assert (info.value.signer, info.value.patient) == (parent.address, child.address)


def test_guardian_is_valid_until_the_second_before_expiry(ledger, chain, client, domain, accounts, hospital):
    child, parent = accounts.patients[0], accounts.patients[1]
    guardian_until = chain.now() + DAY
    ledger.consents.set_guardian(child, parent.address, guardian_until)
    signed = signing.sign(
        parent, domain, build_grant(ledger, chain, child.address, hospital.address, deadline=guardian_until)
    )
    set_next_timestamp(client, guardian_until - 1)
    _, result = ledger.consents.grant_by_sig(hospital, signed)
    assert client.block_timestamp(result.block_number) == guardian_until - 1


def test_expired_guardian_may_not_revoke_either(ledger, chain, domain, accounts, hospital):
    child, parent = accounts.patients[0], accounts.patients[1]
    ledger.consents.set_guardian(child, parent.address, chain.now() + HOUR)
    ledger.consents.grant(child, hospital.address, CATEGORIES, PURPOSES, chain.now(), chain.now() + 30 * DAY)
    chain.advance(2 * HOUR)
    signed = signing.sign(parent, domain, build_revoke(ledger, chain, child.address, hospital.address))
    with pytest.raises(ConsentInvalidSigner):
        ledger.consents.revoke_by_sig(accounts.outsider, signed)


def test_removed_guardian_may_no_longer_sign(ledger, chain, domain, accounts, hospital):
    child, parent = accounts.patients[0], accounts.patients[1]
    ledger.consents.set_guardian(child, parent.address, chain.now() + 365 * DAY)
    signed = signing.sign(parent, domain, build_grant(ledger, chain, child.address, hospital.address))
    ledger.consents.remove_guardian(child, parent.address)
    with pytest.raises(ConsentInvalidSigner):
        ledger.consents.grant_by_sig(hospital, signed)


# ----------------------------------------------------------------------------------------- submitter


@pytest.mark.parametrize("who", ["outsider", "patient", "suspended-clinic"])
def test_signed_grant_needs_an_active_member_to_submit_it(ledger, chain, domain, patient, hospital, accounts, who):
    if who == "suspended-clinic":
        ledger.members.enact(accounts.admins[:2], Action.SUSPEND_MEMBER, accounts.clinic.address)
    submitter = {"outsider": accounts.outsider, "patient": patient, "suspended-clinic": accounts.clinic}[who]
    signed = signing.sign(patient, domain, build_grant(ledger, chain, patient.address, hospital.address))
    with pytest.raises(ConsentUnauthorizedSubmitter) as info:
        ledger.consents.grant_by_sig(submitter, signed)
    assert info.value.account == submitter.address


def test_non_provider_members_may_submit(ledger, chain, domain, patient, hospital, accounts):
    """Any *active member* may relay (the interface says so), not only data recipients: the auditor here."""
    signed = signing.sign(patient, domain, build_grant(ledger, chain, patient.address, hospital.address))
    ledger.consents.grant_by_sig(accounts.auditor, signed)


def test_revoke_by_sig_may_be_submitted_by_a_non_member(ledger, chain, domain, patient, hospital, accounts):
    consent_id, _ = ledger.consents.grant(
        patient, hospital.address, CATEGORIES, PURPOSES, chain.now(), chain.now() + DAY
    )
    signed = signing.sign(patient, domain, build_revoke(ledger, chain, patient.address, hospital.address))
    result = ledger.consents.revoke_by_sig(accounts.outsider, signed)
    (ev,) = ledger.consents.events_in(result, "ConsentRevoked")
    assert (ev["consentId"], ev["signer"]) == (consent_id, patient.address)
    assert not ledger.consents.check(patient.address, hospital.address, Category.ALLERGIES, Purpose.TREATMENT).allowed


# ---------------------------------------------------------------------------------------- tampering


@pytest.mark.parametrize(
    "tamper",
    [
        lambda g, accounts: {"categories": g.categories | category_mask([Category.MENTAL_HEALTH])},
        lambda g, accounts: {"purposes": g.purposes | purpose_mask([Purpose.RESEARCH])},
        lambda g, accounts: {"valid_until": g.valid_until + 365 * DAY},
        lambda g, accounts: {"grantee": accounts.lab.address},
        lambda g, accounts: {"deadline": g.deadline + DAY},
    ],
    ids=["categories", "purposes", "valid-until", "grantee", "deadline"],
)
def test_tampered_terms_are_refused(ledger, chain, domain, patient, hospital, accounts, tamper):
    grant = build_grant(ledger, chain, patient.address, hospital.address)
    signed = signing.sign(patient, domain, grant)
    tampered = SignedMessage(dataclasses.replace(grant, **tamper(grant, accounts)), signed.signer, signed.signature)
    with pytest.raises(ConsentInvalidSignature) as info:
        ledger.consents.grant_by_sig(hospital, tampered)
    assert info.value.signer == patient.address
    with pytest.raises(SignatureError):
        signing.verify(domain, tampered)
    assert ledger.consents.nonces(patient.address, hospital.address) == 0


# ------------------------------------------------------------------------------- malformed signatures
#
# ConsentRegistry._checkSignature first tries ECDSA (OpenZeppelin's tryRecover: 65 bytes only, v in {27, 28},
# s in the lower half order), then falls back to ERC-1271 on the claimed signer. Every variant below of a good
# signature must fail both ways and be refused with ConsentInvalidSignature, consuming nothing: the good
# signature is accepted afterwards.

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
MALFORMED = ["high-s", "v-0-or-1", "erc2098-64-bytes", "66-bytes", "empty", "65-zero-bytes"]


def split_signature(signature: bytes) -> tuple[int, int, int]:
    assert len(signature) == 65
    return int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big"), signature[64]


def join_signature(r: int, s: int, v: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])


def malformed(good: bytes, variant: str) -> bytes:
    r, s, v = split_signature(good)
    assert v in (27, 28) and s <= SECP256K1_N // 2  # a canonical signature to start from
    if variant == "high-s":  # the malleable twin: n - s with v flipped, the same signer for ecrecover
        return join_signature(r, SECP256K1_N - s, 55 - v)
    if variant == "v-0-or-1":
        return join_signature(r, s, v - 27)
    if variant == "erc2098-64-bytes":  # r || (yParity << 255 | s): OpenZeppelin 5 no longer decodes it
        return r.to_bytes(32, "big") + (((v - 27) << 255) | s).to_bytes(32, "big")
    if variant == "66-bytes":
        return good + b"\x00"
    if variant == "empty":
        return b""
    if variant == "65-zero-bytes":
        return b"\x00" * 65
    raise AssertionError(variant)


def ecrecover_off_chain(digest: bytes, signature: bytes) -> str:
    """What the bare ecrecover precompile returns (no malleability check)."""
    r, s, v = split_signature(signature)
    return keys.Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(digest).to_checksum_address()


@pytest.mark.parametrize("variant", MALFORMED)
def test_malformed_patient_signature_is_refused(ledger, chain, domain, patient, hospital, variant):
    grant = build_grant(ledger, chain, patient.address, hospital.address)
    good = signing.sign(patient, domain, grant)
    bad = malformed(good.signature, variant)
    if variant == "high-s":  # only the s <= n/2 rule refuses it: the curve math accepts it
        assert ecrecover_off_chain(expected_digest(domain, grant), bad) == patient.address

    with pytest.raises(ConsentInvalidSignature) as info:
        ledger.consents.grant_by_sig(hospital, SignedMessage(grant, patient.address, bad))
    assert info.value.signer == patient.address
    assert ledger.consents.nonces(patient.address, hospital.address) == 0

    consent_id, result = ledger.consents.grant_by_sig(hospital, good)
    (ev,) = ledger.consents.events_in(result, "ConsentGranted")
    assert (ev["consentId"], ev["signer"]) == (consent_id, patient.address)


def test_signature_claimed_for_a_codeless_guardian_is_refused(ledger, chain, client, domain, accounts, hospital):
    """The ERC-1271 fallback on an address without code gets empty return data: refused, not accepted."""
    child, parent = accounts.patients[0], accounts.patients[1]
    ledger.consents.set_guardian(child, parent.address, chain.now() + 365 * DAY)
    assert client.w3.eth.get_code(parent.address) == b""
    grant = build_grant(ledger, chain, child.address, hospital.address)
    good = signing.sign(child, domain, grant)

    with pytest.raises(ConsentInvalidSignature) as info:  # a real guardian, so not ConsentInvalidSigner
        ledger.consents.grant_by_sig(hospital, SignedMessage(grant, parent.address, good.signature))
    assert info.value.signer == parent.address
    assert ledger.consents.nonces(child.address, hospital.address) == 0

    _, result = ledger.consents.grant_by_sig(hospital, good)
    (ev,) = ledger.consents.events_in(result, "ConsentGranted")
    assert ev["signer"] == child.address


# ------------------------------------------------------------------------------------------ off-chain


def test_verify_accepts_good_and_rejects_bad_signatures(ledger, chain, domain, patient, hospital, accounts):
    grant = build_grant(ledger, chain, patient.address, hospital.address)
    signed = signing.sign(patient, domain, grant)
    signing.verify(domain, signed)  # no exception
    assert signing.recover_signer(domain, grant, signed.signature) == patient.address

    with pytest.raises(SignatureError, match="not by"):
        signing.verify(domain, SignedMessage(grant, accounts.patients[1].address, signed.signature))
    with pytest.raises(SignatureError):
        signing.verify(Domain(chain_id=1, verifying_contract=domain.verifying_contract), signed)
    with pytest.raises(SignatureError):
        signing.verify(
            domain, SignedMessage(dataclasses.replace(grant, purposes=0x7F), signed.signer, signed.signature)
        )
    with pytest.raises(SignatureError):
        signing.verify(domain, SignedMessage(grant, patient.address, b"\x00" * 65))
    with pytest.raises(SignatureError):
        signing.verify(domain, SignedMessage(grant, patient.address, b"\x01\x02"))

    revoke = build_revoke(ledger, chain, patient.address, hospital.address)
    signing.verify(domain, signing.sign(patient, domain, revoke))


def test_typed_data_json_matches_the_contract_digest(ledger, chain, domain, patient, hospital):
    grant = build_grant(ledger, chain, patient.address, hospital.address)
    td = json.loads(json.dumps(signing.typed_data(domain, grant)))  # through JSON, as a wallet receives it
    assert td["primaryType"] == "ConsentGrant"
    assert td["domain"] == {
        "name": "HealthCode Ledger",
        "version": "1",
        "chainId": CHAIN_ID,
        "verifyingContract": ledger.consents.address,
    }

    message = encode_typed_data(full_message=td)
    digest = keccak(b"\x19" + message.version + message.header + message.body)
    assert digest == expected_digest(domain, grant)

    signature = bytes(Account.sign_message(message, patient.key).signature)
    assert signature == signing.sign(patient, domain, grant).signature  # RFC 6979: same key, same digest
    consent_id, result = ledger.consents.grant_by_sig(hospital, SignedMessage(grant, patient.address, signature))
    (ev,) = ledger.consents.events_in(result, "ConsentGranted")
    assert ev["signer"] == patient.address and ev["consentId"] == consent_id


def test_wallet_eth_sign_typed_data_v4_is_accepted(ledger, chain, client, domain, patient, hospital):
    """Hardhat's own wallet (it holds the dev keys) signs the JSON as MetaMask would."""
    grant = build_grant(ledger, chain, patient.address, hospital.address)
    reply = client.w3.provider.make_request(
        "eth_signTypedData_v4", [patient.address, json.dumps(signing.typed_data(domain, grant))]
    )
    signature = bytes.fromhex(reply["result"].removeprefix("0x"))
    signing.verify(domain, SignedMessage(grant, patient.address, signature))
    _, result = ledger.consents.grant_by_sig(hospital, SignedMessage(grant, patient.address, signature))
    (ev,) = ledger.consents.events_in(result, "ConsentGranted")
    assert ev["signer"] == patient.address


def test_signed_message_as_dict_is_json_ready(ledger, chain, domain, patient, hospital):
    signed = signing.sign(patient, domain, build_grant(ledger, chain, patient.address, hospital.address))
    data = json.loads(json.dumps(signed.as_dict()))
    assert data["type"] == "ConsentGrant"
    assert data["signer"] == patient.address
    assert bytes.fromhex(data["signature"][2:]) == signed.signature
    assert data["message"] == signed.message.message()  # the signed names: validFrom, validUntil


# ------------------------------------------------------------------------------------------ ERC-1271


@pytest.fixture
def wallet(ledger, client, artifacts, accounts):
    """A contract wallet owned by patients[4]'s key; returns (address, owner)."""
    owner = accounts.patients[4]
    address, _ = _deploy_one(client, accounts.admins[0], artifacts, "MockERC1271Wallet", owner.address)
    contract = client.w3.eth.contract(address=address, abi=artifacts.contracts["MockERC1271Wallet"].abi)
    assert contract.functions.owner().call() == owner.address
    return address, owner


def wallet_sign(owner, domain: Domain, message) -> bytes:
    """What a one-key smart account produces: the owner's ECDSA signature over the EIP-712 digest."""
    return bytes(
        Account.sign_message(encode_typed_data(full_message=signing.typed_data(domain, message)), owner.key).signature
    )


def test_contract_wallet_patient_signs_a_grant(ledger, chain, domain, hospital, wallet, accounts):
    wallet_address, owner = wallet
    grant = build_grant(ledger, chain, wallet_address, hospital.address)
    signed = SignedMessage(grant, wallet_address, wallet_sign(owner, domain, grant))

    consent_id, result = ledger.consents.grant_by_sig(hospital, signed)

    (ev,) = ledger.consents.events_in(result, "ConsentGranted")
    assert (ev["patient"], ev["signer"]) == (wallet_address, wallet_address)
    assert (
        ledger.consents.check(wallet_address, hospital.address, Category.ALLERGIES, Purpose.TREATMENT).consent_id
        == consent_id
    )

    revoke = build_revoke(ledger, chain, wallet_address, hospital.address)
    result = ledger.consents.revoke_by_sig(
        accounts.outsider, SignedMessage(revoke, wallet_address, wallet_sign(owner, domain, revoke))
    )
    (ev,) = ledger.consents.events_in(result, "ConsentRevoked")
    assert ev["signer"] == wallet_address


def test_contract_wallet_guardian_signs_a_grant(ledger, chain, domain, patient, hospital, wallet):
    wallet_address, owner = wallet  # e.g. a family multisig acting as guardian
    ledger.consents.set_guardian(patient, wallet_address, chain.now() + 365 * DAY)
    grant = build_grant(ledger, chain, patient.address, hospital.address)

    _, result = ledger.consents.grant_by_sig(
        hospital, SignedMessage(grant, wallet_address, wallet_sign(owner, domain, grant))
    )

    (ev,) = ledger.consents.events_in(result, "ConsentGranted")
    assert (ev["patient"], ev["signer"]) == (patient.address, wallet_address)


def test_contract_wallet_refuses_a_signature_not_by_its_owner(ledger, chain, domain, hospital, wallet, accounts):
    wallet_address, _owner = wallet
    grant = build_grant(ledger, chain, wallet_address, hospital.address)
    not_owner = accounts.patients[5]
    with pytest.raises(ConsentInvalidSignature) as info:
        ledger.consents.grant_by_sig(
            hospital, SignedMessage(grant, wallet_address, wallet_sign(not_owner, domain, grant))
        )
    assert info.value.signer == wallet_address
    # A malformed signature makes the wallet revert; the registry reports it as invalid, not as a crash.
    with pytest.raises(ConsentInvalidSignature):
        ledger.consents.grant_by_sig(hospital, SignedMessage(grant, wallet_address, b"\x00" * 65))


def test_owner_key_cannot_sign_as_itself_for_the_wallet_patient(ledger, chain, domain, hospital, wallet):
    """The owner's key is not the patient: signing as the owner address is a stranger's signature."""
    wallet_address, owner = wallet
    grant = build_grant(ledger, chain, wallet_address, hospital.address)
    with pytest.raises(ConsentInvalidSigner):
        ledger.consents.grant_by_sig(hospital, signing.sign(owner, domain, grant))


@pytest.mark.parametrize("variant", MALFORMED)
def test_malformed_wallet_signature_is_refused(ledger, chain, domain, hospital, wallet, variant):
    """The wallet's isValidSignature reverts or says no on each variant; the registry refuses, not crashes."""
    wallet_address, owner = wallet
    grant = build_grant(ledger, chain, wallet_address, hospital.address)
    good = wallet_sign(owner, domain, grant)
    bad = malformed(good, variant)
    if variant == "high-s":
        assert ecrecover_off_chain(expected_digest(domain, grant), bad) == owner.address

    with pytest.raises(ConsentInvalidSignature) as info:
        ledger.consents.grant_by_sig(hospital, SignedMessage(grant, wallet_address, bad))
    assert info.value.signer == wallet_address
    assert ledger.consents.nonces(wallet_address, hospital.address) == 0

    _, result = ledger.consents.grant_by_sig(hospital, SignedMessage(grant, wallet_address, good))
    (ev,) = ledger.consents.events_in(result, "ConsentGranted")
    assert (ev["patient"], ev["signer"]) == (wallet_address, wallet_address)
