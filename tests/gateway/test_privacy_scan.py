"""Privacy scan: after the whole demo, nothing of the patients' health data or identity is on the chain.

The demo (``demo.scenario.seed`` + ``run``, what ``./scripts/up --check`` plays) runs against a real gateway
and Hardhat node. Then every block is read back: every transaction's input data, every log's topics and
data, and every storage slot any transaction wrote (the SSTOREs of ``debug_traceTransaction``'s struct
logs: the value written, and the slot's final value read with ``eth_getStorageAt``). That haystack is
searched for needles derived from the FHIR bundles the demo uploads — names, identifiers (MRN, SSN,
driver's licence), birth date, address, phone, resource ids, every clinical code and display/free text —
and the emergency reason, each as UTF-8, as ASCII hex, and as UTF-16 (LE and BE). Zero hits.

Positive controls prove the scanner can see: a transaction carrying a patient's name in its calldata to
an EOA is found (UTF-8, hex and UTF-16), and a record's on-chain content hash is found in storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from rich.console import Console

from demo import scenario as demo
from gateway.storage import emergency_reasons
from node_client.commitments import reason_commitment
from tests.support.gateway_harness import SAMPLES, RunningGateway, dev, running_gateway

pytestmark = pytest.mark.slow  # the whole demo, then every block, log and written slot scanned (~20 s)

MIN_LEN = 5  # shorter strings ("MA", "S", "male") are not identifying and would match noise


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, key)
    elif isinstance(value, str):
        yield key, value


def needles_of(bundle: dict[str, Any]) -> set[str]:
    """What must never reach the chain, from one uploaded bundle."""
    out: set[str] = set()
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if isinstance(resource.get("id"), str):
            out.add(resource["id"])
        patient = resource.get("resourceType") == "Patient"
        for key, s in _strings(resource):
            if s.startswith(("http://", "https://", "urn:oid:", "urn:ietf:")) or key in (
                "url",
                "system",
                "resourceType",
            ):
                continue  # terminology and profile URIs are public vocabulary, not patient data
            if patient or key in ("code", "display", "text", "div", "valueString", "reference", "value"):
                out.add(s)
    return {n for n in out if len(n) >= MIN_LEN}


def encodings(needle: str) -> dict[str, bytes]:
    utf8 = needle.encode()
    return {
        "utf-8": utf8,
        "hex": utf8.hex().encode(),
        "HEX": utf8.hex().upper().encode(),
        "utf-16-le": needle.encode("utf-16-le"),
        "utf-16-be": needle.encode("utf-16-be"),
    }


@dataclass
class Haystack:
    """Everything on the chain, by where it was found."""

    parts: list[tuple[str, bytes]] = field(default_factory=list)
    sstores: int = 0

    def add(self, where: str, data: bytes) -> None:
        if data:
            self.parts.append((where, data))

    def find(self, needles: set[str]) -> list[tuple[str, str, str]]:
        """(needle, encoding, where) of every occurrence. One pass over all the data per pattern; the
        parts are searched one by one only for a pattern that occurs (and a match spanning two parts
        is no leak, so it is dropped then)."""
        everything = b"\x00".join(data for _, data in self.parts)
        hits = []
        for needle in sorted(needles):
            for enc, pattern in encodings(needle).items():
                if pattern in everything:
                    hits.extend((needle, enc, where) for where, data in self.parts if pattern in data)
        return hits


def _b(hexstr: str | bytes | None) -> bytes:
    if hexstr is None:
        return b""
    if isinstance(hexstr, (bytes, bytearray)):
        return bytes(hexstr)
    return bytes.fromhex(hexstr.removeprefix("0x"))


def scan_chain(gw: RunningGateway) -> Haystack:
    w3 = gw.client.w3
    rpc = w3.provider.make_request
    hay = Haystack()
    touched: set[tuple[str, str]] = set()
    for number in range(w3.eth.block_number + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        hay.add(f"block {number} extraData", _b(block["extraData"]))
        for tx in block["transactions"]:
            txh = tx["hash"].hex() if isinstance(tx["hash"], bytes) else tx["hash"]
            txh = "0x" + txh.removeprefix("0x")
            hay.add(f"tx {txh} input", _b(tx["input"]))
            receipt = w3.eth.get_transaction_receipt(txh)
            for i, log in enumerate(receipt["logs"]):
                hay.add(f"tx {txh} log {i}", b"".join(_b(t) for t in log["topics"]) + _b(log["data"]))
            trace = rpc("debug_traceTransaction", [txh, {"disableMemory": True, "disableStorage": True}])
            assert "result" in trace, trace
            frames = [receipt["contractAddress"] or tx["to"]]
            pending: str | None = None
            for step in trace["result"]["structLogs"]:
                depth = step["depth"]
                while len(frames) > depth:
                    frames.pop()
                if len(frames) < depth:  # entered the call announced by the previous step
                    frames.append(pending or frames[-1])
                stack = step.get("stack") or []
                op = step["op"]
                pending = None
                if op in ("CALL", "CALLCODE", "STATICCALL") and len(stack) >= 2:
                    pending = "0x" + stack[-2].removeprefix("0x")[-40:]
                elif op == "DELEGATECALL":
                    pending = frames[-1]
                if op == "SSTORE" and len(stack) >= 2:
                    hay.sstores += 1
                    slot = "0x" + stack[-1].removeprefix("0x").rjust(64, "0")
                    hay.add(f"tx {txh} SSTORE {frames[-1]} {slot}", _b(stack[-2].removeprefix("0x").rjust(64, "0")))
                    touched.add((frames[-1], slot))
    for address, slot in sorted(touched):
        final = rpc("eth_getStorageAt", [address, slot, "latest"])["result"]
        hay.add(f"storage {address} {slot}", _b(final))
    return hay


@pytest.fixture(scope="module")
def after_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Haystack]]:
    tmp = tmp_path_factory.mktemp("privacy")
    quiet = Console(file=open(tmp / "demo.log", "w"), width=160, color_system=None)  # noqa: SIM115
    with running_gateway(tmp) as gw:
        common = {
            "url": gw.url,
            "manifest": gw.settings.manifest,
            "rpc_url": gw.settings.rpc_url,
            "keys_dir": tmp / "keys",
            "console": quiet,
        }
        demo.seed(**common, samples=SAMPLES)
        assert demo.run(**common).ok
        yield gw, scan_chain(gw)


@pytest.fixture(scope="module")
def needles() -> set[str]:
    out = {demo.EMERGENCY_REASON}
    for p in demo.PATIENTS:
        out |= needles_of(orjson.loads((SAMPLES / "synthea" / p.bundle).read_bytes()))
    return out


def test_the_needles_cover_identity_and_clinical_content(needles: set[str]) -> None:
    """Sanity of the needle set: it has the things a leak would expose."""
    for expected in (
        "Emmie273",
        "Kovacek682",
        "999-30-4482",
        "2000-02-12",
        "555-849-7395",
        "4548-4",
        "309 Hintz Branch Unit 79",
        "b53c3433-4da7-426e-a822-4db32e9c3d9f",
    ):
        assert expected in needles, expected
    assert len(needles) > 500


def test_no_patient_data_anywhere_on_chain(after_demo: tuple[RunningGateway, Haystack], needles: set[str]) -> None:
    _gw, hay = after_demo
    kinds = {where.split()[0] if not where.startswith("tx") else where.split()[2] for where, _ in hay.parts}
    assert {"input", "log", "SSTORE", "storage"} <= kinds, kinds  # every kind of place was looked at
    assert hay.sstores > 50
    hits = hay.find(needles)
    assert hits == [], hits[:20]


def test_positive_control_calldata_to_an_eoa_is_found(after_demo: tuple[RunningGateway, Haystack]) -> None:
    gw, _ = after_demo
    name = "Emmie273 Kovacek682"
    sender, receiver = dev(18), dev(19)
    w3 = gw.client.w3
    for data in (name.encode(), name.encode().hex().encode(), name.encode("utf-16-le")):
        tx = {
            "to": receiver.address,
            "value": 0,
            "data": data,
            "gas": 100_000,
            "chainId": 31337,
            "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
            "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**9,
        }
        w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction))
    hits = scan_chain(gw).find({name})
    assert {enc for _, enc, _ in hits} >= {"utf-8", "hex", "utf-16-le"}, hits
    assert all(" input" in where for _, _, where in hits)


def test_positive_controls_storage_and_logs_are_scanned(after_demo: tuple[RunningGateway, Haystack]) -> None:
    """What is on-chain by design is found where it should be: a patient's address in a record's storage
    slot (RecordRegistry packs it there), and the salted commitment to the emergency reason in a log; the
    bare SHA-256 of the reason (what hashing a guess of the wording gives) is nowhere."""
    import hashlib

    gw, hay = after_demo
    wang = bytes.fromhex(dev(demo.WANG.account).address[2:])
    assert any(wang in data for where, data in hay.parts if where.startswith("storage"))
    assert any(wang in data for where, data in hay.parts if " SSTORE " in where)
    (opening,) = [o for o in emergency_reasons.openings(gw.components.db) if o.reason == demo.EMERGENCY_REASON]
    assert opening.salt is not None
    commitment = reason_commitment(demo.EMERGENCY_REASON, opening.salt)
    assert any(commitment in data for where, data in hay.parts if " log " in where)
    guess = hashlib.sha256(demo.EMERGENCY_REASON.encode()).digest()
    assert not any(guess in data for _where, data in hay.parts)
