"""The auditor: replay the ledger from its deploy block and prove (or refute) every release.

Why this package exists: a regulator or a compliance officer must be able to take the chain and the
gateway's exported release journal, trust *nothing else*, and decide whether every release of a
patient's data was authorized at that moment. So :func:`replay` uses only

* the chain's events (:func:`node_client.events.read_events` over all four contracts of the manifest,
  from ``deploy_block``) and the timestamps of the blocks they are in,
* the optional JSON Lines exports of the gateways' journals (``hcl gateway export-journal``), each
  matched to the gateway whose anchored roots it reproduces, whose every hash is re-derived here from
  the entry fields (the entry layout is re-implemented in
  :mod:`node_client.audit.journal` on purpose, so the auditor does not import gateway code it is meant
  to check),
* the packaged ABIs,

and never a gateway's database or internals. State (members, guardians, opt-outs, consents,
emergency windows, records) is rebuilt in Python in event order, mirroring ``ConsentRegistry.check``
and ``AccessLedger.logAccess`` rule for rule.

The phases, one module each:

* :mod:`~node_client.audit.chain` — events, block timestamps and hashes, transaction senders;
* :mod:`~node_client.audit.journal` — loading the export, every link and hash re-derived;
* :mod:`~node_client.audit.anchors` — each journal against its gateway's anchored Merkle roots;
* :mod:`~node_client.audit.state` — the rebuilt state and the contracts' access rules;
* :mod:`~node_client.audit.judge` — the state replay, judging each strict access and journal entry;
* :mod:`~node_client.audit.timing` — when an entry is judged, and races with later changes;
* :mod:`~node_client.audit.evidence` — stored ciphertexts and requesters' claims;
* :mod:`~node_client.audit.checkpoint` — what a run settled, for a later ``resume``;
* :mod:`~node_client.audit.outputs` — JSON, CSV, HTML and FHIR AuditEvent reports;
* :mod:`~node_client.audit.fhir` — the one AuditEvent mapping (shared with the gateway's /fhir API);
* :mod:`~node_client.audit.run` — :func:`replay`, the phases in order.

When a journal entry is judged (docs/audit.md, "Judging a batch entry")
-----------------------------------------------------------------------
A version 2 entry names the block whose state its decision used (``state_block``, checked against the
chain's hash). It is judged against the state as of that block, at that block's timestamp — no clock
is compared with another. Then the auditor looks for the first later block that would have changed the
verdict (revocation, expiry, suspension, retraction...): none before the block anchoring the entry
means the access was authorized whenever between the two it happened. One before it is a race the
chain alone cannot order; the journal's own record of when the gateway saw which head (``released_at``,
``state_seen_at`` of all entries, in the gateway's clock) settles it when it can: ``ok`` (another entry
shows the head was still before the change after this decision), ``stale_decision`` (an error: another
entry shows the change in use before this decision's state was seen, or the state was older than the
staleness bound), else ``access_in_staleness_window`` (for review).

A version 1 entry (journals written before version 2) has no block: it is judged, as before, at
``released_at // 1000 + clock_skew`` against the state of the latest block not after that time, capped
by its anchor's block; ``clock_skew`` is measured from the anchors of version 1 entries. On chains whose
clock runs ahead of wall time (Hardhat under load) that judgment can be wrong either way.
"""

from __future__ import annotations

from node_client.audit.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_MARGIN,
    CHECKPOINT_VERSION,
    read_checkpoint,
    write_checkpoint,
)
from node_client.audit.model import (
    ANOMALY_KINDS,
    DETAILS,
    REVIEW_KINDS,
    AccessRow,
    Anomaly,
    AuditReport,
    Progress,
)
from node_client.audit.outputs import write_outputs
from node_client.audit.run import DEFAULT_MAX_STALENESS, replay

__all__ = [
    "ANOMALY_KINDS",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_MARGIN",
    "CHECKPOINT_VERSION",
    "DEFAULT_MAX_STALENESS",
    "DETAILS",
    "REVIEW_KINDS",
    "AccessRow",
    "Anomaly",
    "AuditReport",
    "Progress",
    "read_checkpoint",
    "replay",
    "write_checkpoint",
    "write_outputs",
]
