"""``./scripts/bench upload``: records uploaded per second — validated (FHIR R4), grouped by category,
encrypted, stored and registered on-chain — by concurrent providers. The gateway group-commits the
registrations of concurrent uploads (:mod:`gateway.ledger.registrations`): the result says how many
transactions that took and how many uploads shared each.

Each upload is a Bundle of 10-50 resources across five categories (laboratory and vital-sign
Observations, Conditions, MedicationRequests, AllergyIntolerances), so it becomes up to five records.
"""

from __future__ import annotations

import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from bench.gateway import PATIENTS, chain, environment, gateway_process, signed_in
from node_client._exceptions import GatewayProblem
from node_client.keys import dev_account

GOAL_RECORDS_PER_S = 300.0
PROVIDERS = (4, 5, 6, 7)


def _observation(rid: str, category: str, loinc: str, display: str, value: int, unit: str) -> dict[str, Any]:
    """A final Observation of one LOINC code and value (lab results and vital signs differ only so)."""
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc, "display": display}]},
        "effectiveDateTime": "2026-03-01T08:00:00Z",
        "valueQuantity": {"value": value, "unit": unit},
    }


def _bundle(rng: random.Random, serial: int) -> bytes:
    n = rng.randint(10, 50)
    entries = []
    for i in range(n):
        kind = i % 5
        rid = f"u{serial}-{i}"
        if kind == 0:
            res = _observation(rid, "laboratory", "2345-7", "Glucose", rng.randint(70, 140), "mg/dL")
        elif kind == 1:
            res = _observation(rid, "vital-signs", "8867-4", "Heart rate", rng.randint(50, 110), "/min")
        elif kind == 2:
            res = {
                "resourceType": "Condition",
                "id": rid,
                "code": {
                    "coding": [
                        {"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes mellitus type 2"}
                    ]
                },
                "subject": {"reference": "Patient/p"},
                "recordedDate": "2026-03-01",
            }
        elif kind == 3:
            res = {
                "resourceType": "MedicationRequest",
                "id": rid,
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                            "code": "860975",
                            "display": "Metformin 500 MG",
                        }
                    ]
                },
                "subject": {"reference": "Patient/p"},
                "authoredOn": "2026-03-01",
            }
        else:
            res = {
                "resourceType": "AllergyIntolerance",
                "id": rid,
                "code": {
                    "coding": [
                        {"system": "http://snomed.info/sct", "code": "91936005", "display": "Allergy to penicillin"}
                    ]
                },
                "patient": {"reference": "Patient/p"},
            }
        entries.append({"resource": res})
    return orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})


def run_upload_bench(*, quick: bool, log: Any = print) -> dict[str, Any]:
    uploads = 40 if quick else 400
    concurrency = 8
    rng = random.Random(7)
    bodies = [_bundle(rng, i) for i in range(uploads)]
    with tempfile.TemporaryDirectory(prefix="hcl-bench-upload-") as tmp:
        folder = Path(tmp)
        with chain(folder) as net, gateway_process(folder, net, mode="batch") as gw:
            clients = {p: signed_in(gw.url, p) for p in PROVIDERS}  # one keep-alive connection pool each
            latencies: list[float] = []
            records = resources = errors = 0

            def one(i: int) -> tuple[int, int, float, bool]:
                provider = PROVIDERS[i % len(PROVIDERS)]
                patient = dev_account(PATIENTS[i % len(PATIENTS)]).address
                t0 = time.perf_counter()
                try:
                    body = clients[provider].upload(patient, bodies[i])
                except GatewayProblem:
                    return 0, 0, (time.perf_counter() - t0) * 1000, False
                dt = (time.perf_counter() - t0) * 1000
                return len(body["records"]), sum(x["resources"] for x in body["records"]), dt, True

            log(f"{uploads} uploads of 10-50 resources, {concurrency} concurrent providers")
            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                for recs, res, dt, ok in pool.map(one, range(uploads)):
                    records += recs
                    resources += res
                    latencies.append(dt)
                    errors += not ok
            seconds = time.perf_counter() - started
            rss = gw.peak_rss_mb()
            transactions = gw.metric("hcl_registration_uploads_count")
            grouped = gw.metric("hcl_registration_uploads_sum") / max(1.0, transactions)
            for client in clients.values():
                client.close()
    latencies.sort()
    return {
        "uploads": uploads,
        "concurrency": concurrency,
        "seconds": round(seconds, 2),
        "errors": errors,
        "records": records,
        "resources": resources,
        "records_per_s": round(records / seconds, 1),
        "uploads_per_s": round(uploads / seconds, 1),
        "resources_per_s": round(resources / seconds, 1),
        "p50_ms": round(latencies[len(latencies) // 2], 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 1),
        "peak_rss_mb": round(rss, 1),
        "registration_transactions": int(transactions),
        "uploads_per_transaction": round(grouped, 2),
        "goals": {"records_per_s": GOAL_RECORDS_PER_S},
        **environment(),
    }
