"""Issue 16's acceptance test: the chain does not tell a patient's sensitive records and consents from ordinary ones.

One gateway, two fresh patients who each hand it their category key. Patient A has records in the four
sensitive categories (mental health, sexual/reproductive health, genomics, identifiers) and consents for
them; patient B has as many ordinary records (lab results, imaging, encounters, procedures) and as many
ordinary consents. An observer then reads only chain data — every log from block 0, every transaction's
input, and the storage the contracts wrote (through their own getters) — and her best guess, "a slot is
the category with that bit", is wrong for every one of A's records and consents; A's slots and B's are of
the same kind (blinded slots only). The consents still work on the blinded slots: without the matching
consent a release is refused, by the gateway and by the contract itself, and with it the record is read
(A's mental-health record sits in slot 15, the slot no category has as its own bit).

That the emergency reason cannot be confirmed by hashing a guess is tests/gateway/test_privacy_scan.py's
(``test_positive_controls_storage_and_logs_are_scanned``: the salted commitment is on chain, the bare hash of
the reason nowhere).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3.exceptions import ContractLogicError, MismatchedABI
from web3.types import RPCEndpoint, TxData

from node_client._exceptions import GatewayProblem
from node_client.blinding import BLINDED_SLOTS, SLOT_COUNT, CategoryKey, category_key, sign_category_key
from node_client.vocabulary import CATEGORIES, Category, Purpose, parse_categories, parse_purposes
from tests.support.gateway_harness import CLINIC, GATEWAY, HOSPITAL, LAB, PHARMACY, RunningGateway, dev, running_gateway

SNOMED = "http://snomed.info/sct"
SENSITIVE = (Category.MENTAL_HEALTH, Category.SEXUAL_REPRODUCTIVE_HEALTH, Category.GENOMICS, Category.IDENTIFIERS)
ORDINARY = (Category.LAB_RESULTS, Category.IMAGING, Category.ENCOUNTERS, Category.PROCEDURES)
#: what each patient consents to, per reader: two consents each, two categories each
CONSENTS = {
    "A": {CLINIC: "mental-health,sexual-reproductive-health", LAB: "genomics,identifiers"},
    "B": {CLINIC: "lab-results,imaging", LAB: "encounters,procedures"},
}
NOT_AUTHORIZED = keccak(text="AccessLedgerNotAuthorized(address,address,uint8,uint8)")[:4].hex()
TRIES = 1000  # fresh accounts drawn until one's permutation moves every category of interest


def _concept(code: str) -> dict[str, Any]:
    return {"coding": [{"system": SNOMED, "code": code}]}


def _resources(patient: str) -> dict[Category, dict[str, Any]]:
    """One small resource per category, each filed under it by gateway.fhir.categories."""
    ref = {"reference": f"Patient/{patient}"}
    condition = {"resourceType": "Condition", "subject": ref}
    return {
        Category.MENTAL_HEALTH: {**condition, "code": _concept("35489007")},  # depressive disorder
        Category.SEXUAL_REPRODUCTIVE_HEALTH: {**condition, "code": _concept("72892002")},  # normal pregnancy
        Category.GENOMICS: {"resourceType": "MolecularSequence", "type": "dna", "coordinateSystem": 0},
        Category.IDENTIFIERS: {"resourceType": "RelatedPerson", "patient": ref, "name": [{"family": "Doe"}]},
        Category.LAB_RESULTS: {"resourceType": "Observation", "status": "final", "code": _concept("271649006")},
        Category.IMAGING: {"resourceType": "ImagingStudy", "status": "available", "subject": ref},
        Category.ENCOUNTERS: {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}},
        Category.PROCEDURES: {"resourceType": "Procedure", "status": "completed", "subject": ref},
    }


def _bundle(patient: str, categories: tuple[Category, ...]) -> bytes:
    every = _resources(patient)
    entries = [
        {"resource": {**every[c], "id": f"{c.name.lower().replace('_', '-')}-{os.urandom(4).hex()}"}}
        for c in categories
    ]
    return orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})


@dataclass
class Patient:
    account: LocalAccount
    key: CategoryKey
    records: dict[Category, str] = field(default_factory=dict)  # category → record id


def _fresh_patient(gw: RunningGateway, moved: tuple[Category, ...], spare: Category | None = None) -> Patient:
    """A new, funded account whose key moves each of ``moved`` off its own bit, and ``spare`` (if given)
    into slot 15, the slot no category has by its own bit (a bounded search)."""
    domain = gw.ledger.consents.domain()
    for _ in range(TRIES):
        account = Account.create()
        key = category_key(domain, account.address, sign_category_key(account, domain))
        if all(key.slot(c) != c for c in moved) and (spare is None or key.slot(spare) == SLOT_COUNT - 1):
            gw.client.w3.provider.make_request(RPCEndpoint("hardhat_setBalance"), [account.address, hex(10**21)])
            return Patient(account, key)
    raise AssertionError(f"no account in {TRIES} has that permutation")


@dataclass
class Observed:
    """What the chain shows of one patient: her records' slots, her consents' slot masks, and every
    ``category``/``categories`` argument of the transactions that name her or that she sent."""

    record_slots: Counter[int] = field(default_factory=Counter)
    consent_masks: Counter[int] = field(default_factory=Counter)
    in_inputs: set[tuple[str, int]] = field(default_factory=set)

    def bits(self) -> Counter[int]:
        """Every slot her records and consents use, counted."""
        out = Counter(self.record_slots)
        for mask, n in self.consent_masks.items():
            out.update({b: n for b in range(16) if mask >> b & 1})
        return out


def _named_values(value: Any, names: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """Every ``name: value`` pair in a transaction's decoded arguments (structs decode to dicts)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k in names:
                yield k, v
            yield from _named_values(v, names)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _named_values(v, names)


def _observe(gw: RunningGateway, patient: str) -> Observed:
    """The observer: every log from block 0, every transaction's input, the contracts' stored records and
    consents (read through their getters). Nothing of the gateway."""
    w3, ledger, seen = gw.client.w3, gw.ledger, Observed()
    wrappers = (ledger.members, ledger.consents, ledger.records, ledger.access)
    contracts = {w.address.lower(): w.contract for w in wrappers}
    for log in w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest"}):
        contract = contracts[str(log["address"]).lower()]
        for name in ("RecordRegistered", "ConsentGranted"):
            try:
                args = contract.events[name]().process_log(log)["args"]
            except (KeyError, ValueError, MismatchedABI):  # another contract's or another event's log
                continue
            if args["patient"].lower() != patient.lower():
                continue
            if name == "RecordRegistered":
                seen.record_slots[args["category"]] += 1
                assert ledger.records.record_of(bytes(args["recordId"])).category == args["category"]
            else:
                seen.consent_masks[args["categories"]] += 1
                assert ledger.consents.consent_of(patient, args["grantee"]).categories == args["categories"]
    for number in range(w3.eth.block_number + 1):
        for tx in cast(list[TxData], w3.eth.get_block(number, full_transactions=True)["transactions"]):
            target = contracts.get(str(tx.get("to") or "").lower())
            if target is None:
                continue
            _fn, inputs = target.decode_function_input(tx["input"])
            mine = str(tx["from"]).lower() == patient.lower() or patient.lower() in str(inputs).lower()
            if mine:
                seen.in_inputs |= set(_named_values(inputs, ("category", "categories")))
    return seen


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("blinded")) as running:
        yield running


def _upload_and_consent(
    gw: RunningGateway, p: Patient, categories: tuple[Category, ...], consents: dict[int, str]
) -> None:
    """She hands the hospital her key, the hospital uploads her records, she grants her consents on chain."""
    hospital = gw.sign_in(dev(HOSPITAL))
    address = p.account.address
    assert hospital.enrol_category_key(address, sign_category_key(p.account, gw.ledger.consents.domain()))["learned"]
    up = hospital.upload(address, _bundle(address, categories))
    by_slug = {CATEGORIES[c].slug: c for c in categories}
    assert sorted(r["category"] for r in up["records"]) == sorted(by_slug)  # the API names her categories
    p.records = {by_slug[r["category"]]: r["recordId"] for r in up["records"]}
    now = gw.client.block_timestamp()
    for reader, slugs in consents.items():
        slots = gw.slots(p.account, slugs)
        gw.ledger.consents.grant(
            p.account, dev(reader).address, slots, parse_purposes("treatment"), now - 60, now + 86_400
        )


def test_the_chain_does_not_tell_sensitive_categories_from_ordinary_ones(gw: RunningGateway) -> None:
    a, b = _fresh_patient(gw, SENSITIVE, spare=Category.MENTAL_HEALTH), _fresh_patient(gw, ORDINARY)
    with pytest.raises(GatewayProblem) as refused:  # without her key the hospital cannot file them
        gw.sign_in(dev(HOSPITAL)).upload(a.account.address, _bundle(a.account.address, SENSITIVE))
    assert (refused.value.status, refused.value.code) == (409, "category_key_needed")
    _upload_and_consent(gw, a, SENSITIVE, CONSENTS["A"])
    _upload_and_consent(gw, b, ORDINARY, CONSENTS["B"])

    seen_a, seen_b = _observe(gw, a.account.address), _observe(gw, b.account.address)
    # what the chain holds is her slots: the categories moved by her key
    assert seen_a.record_slots == Counter(a.key.slot(c) for c in SENSITIVE)
    assert seen_a.consent_masks == Counter(a.key.slots(parse_categories(v)) for v in CONSENTS["A"].values())
    # (a) the observer's best guess, "slot N is the category with bit N", is wrong for every slot A uses
    # (a plain sensitive bit she uses holds another of her categories)
    for slot in seen_a.bits():
        assert a.key.category(slot) != slot, slot
    # the inputs of her transactions show nothing the logs do not
    assert {v for n, v in seen_a.in_inputs if n == "category"} == set(seen_a.record_slots)
    assert {v for n, v in seen_a.in_inputs if n == "categories"} == set(seen_a.consent_masks)
    # (b) A's slots and B's are of one kind: blinded slots only, as many records and consents, as many bits
    for seen, p in ((seen_a, a), (seen_b, b)):
        assert set(seen.bits()) <= set(BLINDED_SLOTS)
        assert all(p.key.category(s) != s for s in seen.bits())
    assert sorted(seen_a.record_slots.values()) == sorted(seen_b.record_slots.values()) == [1, 1, 1, 1]
    popcounts = [sorted(m.bit_count() for m in s.consent_masks.elements()) for s in (seen_a, seen_b)]
    assert popcounts[0] == popcounts[1] == [2, 2]

    # (c) the consents still govern releases, on the blinded slots
    gw.wait_indexed()
    clinic, pharmacy = gw.sign_in(dev(CLINIC)), gw.sign_in(dev(PHARMACY))
    released = clinic.release(a.records[Category.MENTAL_HEALTH], "treatment")
    assert (
        released["consentId"]
        == "0x" + gw.ledger.consents.consent_of(a.account.address, dev(CLINIC).address).consent_id.hex()
    )
    for reader, category in ((clinic, Category.GENOMICS), (pharmacy, Category.MENTAL_HEALTH)):
        with pytest.raises(GatewayProblem) as no_consent:
            reader.release(a.records[category], "treatment")
        assert no_consent.value.status == 403, no_consent.value
    log_access = gw.ledger.access.contract.functions.logAccess
    genomics = bytes.fromhex(a.records[Category.GENOMICS].removeprefix("0x"))
    entry = (a.account.address, genomics, int(Purpose.TREATMENT), os.urandom(32))
    with pytest.raises(ContractLogicError) as reverted:  # the contract itself refuses to ledger it
        log_access(dev(CLINIC).address, *entry).call({"from": dev(GATEWAY).address})
    assert NOT_AUTHORIZED in str(reverted.value), reverted.value
    log_access(dev(LAB).address, *entry).call({"from": dev(GATEWAY).address})  # the lab holds that consent
