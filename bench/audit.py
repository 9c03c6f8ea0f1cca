"""Audit benchmark: a batch-mode ledger of N accesses, then the real ``hcl audit replay`` over it.

Why the ledger is generated and not released over HTTP: a release costs ~1 ms of gateway work, so a
million of them would take the better part of an hour before the auditor even starts. What the
auditor is measured on must still be real, so only the *release requests* are skipped:

* a real Hardhat node on a free port, the real contracts (``deploy_dev``), real members;
* real ``RecordRegistry.registerBatch`` records and real patient-signed ``ConsentRegistry.grant``
  consents (every journal entry is covered by one, so a correct auditor finds the ledger clean);
* the journal is written by the gateway's own :class:`gateway.ledger.journal.Journal` (``append_many``,
  group commit, fsync) and anchored by its own :class:`gateway.ledger.anchoring.Anchorer` calling
  ``AccessLedger.anchorBatch`` every ``anchor_every`` entries; a few strict ``logAccess`` too;
* the export is ``Journal.export``, the very file ``hcl gateway export-journal`` writes.

Entry times advance ``spacing_ms`` per entry (1 ms: a gateway releasing 1,000 records a second), and
each anchor block is mined one second after its batch (``evm_setNextBlockTimestamp``). Entries are
``HCLJ/2``: each names the chain's latest block when its batch is generated as the state its decision
read (with that block's hash, seen 5 ms before the decision), as the gateway's read model would.

Then ``hcl audit replay --journal ... --json`` runs as a subprocess (the real CLI, imports included)
and its summary gives the phase timings. The result goes to ``bench/results/audit.json``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.gateway import patient_key
from gateway.ledger.anchoring import Anchorer
from gateway.ledger.journal import Journal, JournalEntry
from node_client._client import ChainClient
from node_client._node import HardhatNode, free_port
from node_client.contracts import RecordInput
from node_client.deploy import Manifest, deploy_dev
from node_client.keys import dev_account
from node_client.vocabulary import CATEGORIES, Purpose

__all__ = ["AuditBenchResult", "GeneratedLedger", "generate_ledger", "run_audit_bench"]

ROOT = Path(__file__).resolve().parents[1]
GATEWAY = 3
PROVIDERS = (4, 5, 6, 7)  # hospital, clinic, lab, pharmacy
PATIENTS = tuple(range(10, 18))
RECORDS_PER_PATIENT = 11  # one per category
STRICT_ACCESSES = 20

#: goals from the auditor issue
GOAL_SECONDS = 60.0
GOAL_VERIFY_RATE = 50_000.0


@dataclass(frozen=True, slots=True)
class GeneratedLedger:
    """A ledger ready to audit: the node is still running (the caller stops it)."""

    node: HardhatNode
    manifest_path: Path
    journal_export: Path
    accesses: int  # journal entries + strict accesses
    anchors: int
    seconds: float


@dataclass(frozen=True, slots=True)
class AuditBenchResult:
    accesses: int
    seconds: float  # the replay CLI, wall clock, end to end (process start to exit)
    summary: dict[str, Any]
    generate_seconds: float
    anchors: int

    @property
    def accesses_per_s(self) -> float:
        return self.accesses / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        s = self.summary
        return {
            "accesses": self.accesses,
            "seconds": round(self.seconds, 3),
            "accesses_per_s": round(self.accesses_per_s, 1),
            "accesses_per_s_verify": s.get("accesses_per_s_verify"),
            "phases": s.get("seconds"),
            "journal_entries": s.get("journal_entries"),
            "strict_accesses": s.get("strict_accesses"),
            "anchors": self.anchors,
            "events": s.get("events"),
            "errors": s.get("errors"),
            "generate_seconds": round(self.generate_seconds, 1),
            "goals": {"seconds": GOAL_SECONDS, "accesses_per_s_verify": GOAL_VERIFY_RATE},
            "meets_goals": self.seconds <= GOAL_SECONDS and (s.get("accesses_per_s_verify") or 0) >= GOAL_VERIFY_RATE,
            "commit": _git_commit(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        }


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def generate_ledger(
    folder: Path,
    accesses: int,
    *,
    anchor_every: int = 10_000,
    spacing_ms: int = 1,
    log: Any = print,
    progress: Any = None,
) -> GeneratedLedger:
    """Builds the ledger described in the module docstring in ``folder`` and exports its journal."""
    started = time.perf_counter()
    node = HardhatNode(log_path=folder / "hardhat.log").start(port=free_port())
    try:
        client = ChainClient(rpc_url=node.url)
        manifest: Manifest = deploy_dev(client)
        manifest_path = folder / "manifest.json"
        manifest.save(manifest_path)
        ledger = manifest.connect(client)
        gateway = dev_account(GATEWAY)
        log(f"deployed on {node.url}; registering records and consents")

        # records: one per category per patient, each in the patient's slot of it, registered by the
        # gateway for a rotating provider
        domain = ledger.consents.domain()
        keys = {p: patient_key(domain, p) for p in PATIENTS}
        records: list[tuple[str, bytes, int]] = []  # (patient, record id, slot)
        for p in PATIENTS:
            patient = dev_account(p).address
            batch = [
                RecordInput(
                    _h(f"rec-{p}-{c}"), keys[p].slot(c), _h(f"ct-{p}-{c}"), b"\x01\x55\x12\x20" + _h(f"ct-{p}-{c}")
                )
                for c in range(len(CATEGORIES))
            ]
            ledger.records.register_batch(gateway, patient, dev_account(PROVIDERS[p % len(PROVIDERS)]).address, batch)
            records.extend((patient, r.record_id, r.category) for r in batch)
        # consents: every patient lets every provider read every category for treatment, for a year
        now = client.block_timestamp()
        consent_of: dict[tuple[str, str], bytes] = {}
        all_categories = (1 << len(CATEGORIES)) - 1
        for p in PATIENTS:
            for q in PROVIDERS:
                cid, _ = ledger.consents.grant(
                    dev_account(p),
                    dev_account(q).address,
                    keys[p].slots(all_categories),
                    1 << int(Purpose.TREATMENT),
                    now,
                    now + 365 * 86_400,
                )
                consent_of[(dev_account(p).address, dev_account(q).address)] = cid
        # a few strict-mode accesses too (AccessLogged, sent by the gateway)
        providers = [dev_account(q).address for q in PROVIDERS]
        for i in range(STRICT_ACCESSES):
            patient, rid, _cat = records[i % len(records)]
            ledger.access.log_access(
                gateway, providers[i % len(providers)], patient, rid, int(Purpose.TREATMENT), _h(f"strict-{i}")
            )

        # the journal, written and anchored by the gateway's own code
        journal = Journal(folder / "journal.db")
        t0_ms = (client.block_timestamp() + 1) * 1000
        last_t_ms = t0_ms

        def anchor_fn(root: bytes, size: int) -> tuple[str, int]:
            # the anchor block lands one second after the last entry it covers
            client.w3.provider.make_request("evm_setNextBlockTimestamp", [last_t_ms // 1000 + 1])
            tx = ledger.access.anchor_batch(gateway, root, size)
            return tx.tx_hash, tx.block_number

        anchorer = Anchorer(journal, anchor_fn, interval=3600, size_threshold=anchor_every)
        rng = os.urandom(32 * min(accesses, 1 << 16))
        n_records = len(records)
        n_prov = len(providers)
        treatment = int(Purpose.TREATMENT)
        done = 0
        try:
            while done < accesses:
                chunk = min(anchor_every, accesses - done)
                state_block = client.block_number()  # the state these decisions read, as a read model would
                state_hash = bytes(client.w3.eth.get_block(state_block)["hash"])
                batch_entries = []
                for k in range(done, done + chunk):
                    patient, rid, _cat = records[(k * 7) % n_records]
                    requester = providers[k % n_prov]
                    off = (k % (len(rng) // 32)) * 32
                    access_hash = hashlib.sha256(rng[off : off + 32] + k.to_bytes(8, "big")).digest()
                    released_at = t0_ms + k * spacing_ms
                    batch_entries.append(
                        JournalEntry(
                            requester=requester,
                            patient=patient,
                            record_id=rid,
                            purpose=treatment,
                            consent_id=consent_of[(patient, requester)],
                            emergency=False,
                            access_hash=access_hash,
                            released_at=released_at,
                            state_block=state_block,
                            state_block_hash=state_hash,
                            state_seen_at=released_at - 5,
                        )
                    )
                journal.append_many(batch_entries)
                done += chunk
                last_t_ms = t0_ms + (done - 1) * spacing_ms
                anchorer.anchor_once()
                if progress is not None:
                    progress(done, accesses)
            export = folder / "journal.jsonl"
            journal.export(export)
        finally:
            journal.close()
        return GeneratedLedger(
            node,
            manifest_path,
            export,
            accesses + STRICT_ACCESSES,
            anchorer.anchors_made,
            time.perf_counter() - started,
        )
    except BaseException:
        node.stop()
        raise


def replay_cli(ledger: GeneratedLedger, out: Path, extra: list[str] | None = None) -> tuple[float, dict[str, Any]]:
    """Runs ``hcl audit replay --json`` as a subprocess; returns (wall seconds, its JSON answer)."""
    cmd = [
        str(Path(sys.executable).with_name("hcl")),
        "audit",
        "replay",
        "--rpc-url",
        ledger.node.url,
        "--manifest",
        str(ledger.manifest_path),
        "--journal",
        str(ledger.journal_export),
        "--out",
        str(out),
        "--json",
        *(extra or []),
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"hcl audit replay failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return seconds, orjson.loads(proc.stdout.strip().splitlines()[-1])


def run_audit_bench(
    accesses: int,
    *,
    anchor_every: int | None = None,
    keep: Path | None = None,
    log: Any = print,
    progress: Any = None,
    replay_args: list[str] | None = None,
) -> AuditBenchResult:
    """Generates a ledger of ``accesses`` journal entries (plus a few strict ones) and replays it."""
    every = anchor_every or max(1, min(10_000, accesses // 20))
    with tempfile.TemporaryDirectory(prefix="hcl-bench-audit-") as tmp:
        folder = keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        ledger = generate_ledger(folder, accesses, anchor_every=every, log=log, progress=progress)
        try:
            log(f"generated in {ledger.seconds:.1f} s; replaying with hcl audit replay")
            seconds, answer = replay_cli(ledger, folder / "audit-report", replay_args)
        finally:
            ledger.node.stop()
    summary = answer["summary"]
    if summary["accesses"] != ledger.accesses:
        raise RuntimeError(f"the auditor saw {summary['accesses']} accesses, {ledger.accesses} were made")
    if answer["exit_code"] != 0:
        raise RuntimeError(f"the generated ledger is clean but the auditor reported {summary['by_kind']}")
    return AuditBenchResult(ledger.accesses, seconds, summary, ledger.seconds, ledger.anchors)
