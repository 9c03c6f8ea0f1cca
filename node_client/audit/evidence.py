"""Evidence beyond the ledger: the stored ciphertexts (``--store``), releases requesters hold (``--claims``)
and the emergency reasons gateways kept (``--reasons``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import requests

from node_client.audit.model import AccessRow, Anomaly, hex0x
from node_client.audit.state import R_RETRACTED, State
from node_client.blobs import InvalidCid, cid_to_str, local_blob_path
from node_client.commitments import reason_commitment
from node_client.events import EventRecord

__all__ = ["check_blobs", "check_claims", "check_reasons"]


def _read_blob(store: Path | str, ipfs: bool, locator: bytes, evidence: dict[str, Any]) -> bytes | None:
    """The bytes the store holds for ``locator`` (``None``: it holds none); notes where it looked."""
    if ipfs:
        try:
            resp = requests.post(f"{str(store).rstrip('/')}/api/v0/cat", params={"arg": evidence["cid"]}, timeout=30)
        except requests.RequestException as exc:
            raise ValueError(f"IPFS API {store} unreachable: {exc}") from exc
        evidence["store"] = str(store)
        return resp.content if resp.status_code == 200 else None
    path = local_blob_path(Path(store), locator)
    evidence["path"] = str(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def check_blobs(state: State, store: Path | str) -> list[Anomaly]:
    """Re-hashes every stored ciphertext of a live (not retracted) record against its ``contentHash``.

    ``store`` is a local content-addressed directory (the layout of :mod:`node_client.blobs`, which the
    gateway's local store uses) or an ``http(s)://`` IPFS (Kubo) RPC API URL (``/api/v0/cat``). The store
    is only asked for bytes: it is the SHA-256 of what it returns, compared with the hash the gateway
    registered on-chain, that decides. Retracted records are skipped (their blobs are deleted on purpose).
    """
    found: list[Anomaly] = []
    ipfs = isinstance(store, str) and store.startswith(("http://", "https://"))
    for rid, rec in state.records.items():
        patient, _category, status, content_hash, locator, block, tx_hash = rec
        if status == R_RETRACTED:
            continue
        evidence = {
            "record_id": hex0x(rid),
            "patient": patient,
            "locator": hex0x(locator),
            "block": block,
            "tx_hash": tx_hash,
            "content_hash": hex0x(content_hash),
        }
        try:
            evidence["cid"] = cid_to_str(locator)
        except InvalidCid:
            found.append(Anomaly("blob_missing", "the on-chain locator is not a CID", evidence))
            continue
        data = _read_blob(store, ipfs, locator, evidence)
        if data is None:
            found.append(Anomaly("blob_missing", "the store holds no ciphertext for this record", evidence))
            continue
        actual = hashlib.sha256(data).digest()
        if actual != content_hash:
            stored = {**evidence, "stored_sha256": hex0x(actual), "stored_size": len(data)}
            found.append(
                Anomaly("blob_hash_mismatch", "the stored ciphertext no longer matches its on-chain hash", stored)
            )
    return found


def _claim_mismatch(claim: dict[str, Any], ledger: dict[str, Any], row: AccessRow) -> list[str]:
    """The fields of a claimed release that differ from the ledgered access with its ``accessId``."""
    mismatch = []
    if claim.get("recordId") and str(claim["recordId"]).lower() != row.record_id:
        mismatch.append("recordId")
    if claim.get("patient") and str(claim["patient"]).lower() != row.patient.lower():
        mismatch.append("patient")
    if "journalIndex" in ledger and ledger["journalIndex"] != row.entry_index:
        mismatch.append("journalIndex")
    if "txHash" in ledger and str(ledger["txHash"]).lower() != (row.tx_hash or "").lower():
        mismatch.append("txHash")
    return mismatch


def check_claims(path: Path, rows: list[AccessRow]) -> list[Anomaly]:
    """Releases a requester says it received, each of which must be on the ledger.

    ``path`` is JSON Lines, one release response per line as the gateway returned it (the encrypted
    payload may be left out): ``accessId`` is required; ``recordId``, ``patient`` and ``ledger``
    (``{"mode": "batch", "journalIndex": i}`` or ``{"mode": "strict", "txHash": ...}``) are compared
    when present. What this proves: a release response is not signed by the gateway, so a claim is
    the requester's word. A claim without a ledger entry therefore means that either the gateway
    released without ledgering or the requester invented the response; both are for a person to
    settle, and the response bytes (whose hash ``accessId`` commits to with the gateway's nonce)
    are the evidence to ask for. A ledgered access cannot be denied by the gateway afterwards.
    """
    by_hash: dict[str, AccessRow] = {r.access_hash: r for r in rows}
    found: list[Anomaly] = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                claim = orjson.loads(line)
                access_id = str(claim["accessId"]).lower()
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: not a release response: {exc}") from exc
            ledger = claim.get("ledger") if isinstance(claim.get("ledger"), dict) else {}
            evidence = {
                "line": lineno,
                "access_id": access_id,
                "record_id": claim.get("recordId"),
                "patient": claim.get("patient"),
                "ledger": ledger,
            }
            row = by_hash.get(access_id)
            if row is None:
                message = "a requester holds a release that is on no ledger (journal or chain)"
                found.append(Anomaly("release_without_ledger_entry", message, evidence))
                continue
            mismatch = _claim_mismatch(claim, ledger, row)
            if mismatch:
                ledgered = {
                    "record_id": row.record_id,
                    "patient": row.patient,
                    "entry_index": row.entry_index,
                    "tx_hash": row.tx_hash,
                }
                message = f"the ledgered access with this accessId differs in {', '.join(mismatch)}"
                found.append(Anomaly("release_without_ledger_entry", message, {**evidence, "ledgered": ledgered}))
    return found


def check_reasons(path: Path, events: list[EventRecord]) -> list[Anomaly]:
    """Emergency reasons a gateway kept, each of which must open its window's ``reasonHash`` on chain.

    ``path`` is JSON Lines of openings as ``GET /v1/emergency-reasons`` gives them (``accessId``,
    ``reason``, ``salt``; ``hcl audit fetch-reasons`` writes it). An opening whose commitment differs from
    the chain's, or that names no emergency window, is an anomaly: the gateway shows patients and auditors
    a reason the member did not commit to. Windows without an opening here were relayed elsewhere.
    """
    windows = {bytes(e["accessId"]): e for e in events if e.name == "EmergencyAccessGranted"}
    found: list[Anomaly] = []
    for lineno, opening in _json_lines(path, ("accessId", "reason")):
        access_id = bytes.fromhex(str(opening["accessId"]).removeprefix("0x"))
        evidence: dict[str, Any] = {"line": lineno, "access_id": hex0x(access_id), "reason": opening["reason"]}
        window = windows.get(access_id)
        if window is None:
            found.append(Anomaly("emergency_reason_unknown", "a reason for no emergency window on chain", evidence))
            continue
        salt = opening.get("salt")
        reason = str(opening["reason"])
        opened = (
            hashlib.sha256(reason.encode()).digest()
            if salt is None
            else reason_commitment(reason, bytes.fromhex(str(salt).removeprefix("0x")))
        )
        if opened != bytes(window["reasonHash"]):
            evidence |= {"block": window.block_number, "tx_hash": window.tx_hash, "salt": salt}
            message = "the kept reason does not open the reasonHash the member committed to on chain"
            found.append(Anomaly("emergency_reason_mismatch", message, evidence))
    return found


def _json_lines(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a JSON Lines file, numbered; ``ValueError`` naming the line of a malformed one."""
    out: list[tuple[int, dict[str, Any]]] = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
                missing = [k for k in required if k not in obj]
            except (orjson.JSONDecodeError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: not a JSON object: {exc}") from exc
            if missing:
                raise ValueError(f"{path}:{lineno}: missing {', '.join(missing)}")
            out.append((lineno, obj))
    return out
