"""Test hook: named points at which the process kills itself with SIGKILL (the kill -9 tests).

Not a feature. :func:`crashpoint` is a no-op unless the environment variable ``HCL_TEST_CRASH_AT``
was set when this module was imported (one global lookup per call otherwise)::

    HCL_TEST_CRASH_AT=<point>[:<n>]   kill this process the n-th time <point> is reached (default 1st)

``tests/system/test_faults.py`` starts ``hcl gateway serve`` (and ``hcl gateway reconcile``) with it, drives
uploads, releases and retractions until the process dies, and checks what survives. SIGKILL, not an
exception: no ``finally`` block, no atexit handler and no flush runs, exactly like ``kill -9`` or a
power cut of the process (the kernel keeps what was written; see docs/reliability.md for the
difference with a machine crash).

:data:`POINTS` is the complete list, with what has and has not happened when each one fires.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["ENV", "POINTS", "crashpoint"]

ENV = "HCL_TEST_CRASH_AT"

#: every crash point: name -> the state of things when it fires
POINTS: dict[str, str] = {
    "upload.after_first_blob": "one ciphertext stored, the upload's other blobs and all rows not yet",
    "upload.after_blobs": "every ciphertext stored, no record_keys row written",
    "upload.after_pending_rows": "rows written in state pending, registration not sent",
    "upload.after_register_tx": "registerBatch mined, rows still pending, no response",
    "upload.after_registered": "rows registered, no response sent",
    "blob.after_temp_write": "a blob's temporary file written and fsynced, not renamed into place",
    "blob.after_rename": "a blob renamed into place, its directory not fsynced",
    "blob.after_delete": "a blob unlinked, its directory not fsynced",
    "retract.after_shred": "data key destroyed (state shredded), on-chain retract not sent",
    "retract.after_chain_retract": "retract mined, row still shredded, blob still stored",
    "retract.after_retracted": "row retracted, blob not deleted yet",
    "release.after_decision": "consent decided, nothing read",
    "release.before_ledger": "record decrypted and sealed in memory, access not ledgered",
    "release.after_ledger": "the entry mined in a logAccessBatch (strict) or journal row durable (batch), no response sent",
    "journal.before_commit": "a batch of journal rows inserted, COMMIT not done",
    "journal.after_commit": "journal rows committed, the waiting releases not told",
    "journal.segment_written": "a sealed segment file fsynced and renamed into place, not in the manifest (its rows"
    " still in the open database)",
    "journal.segment_before_commit": "manifest row inserted, COMMIT not done",
    "journal.segment_after_commit": "segment sealed and committed, the journal's memory not updated",
    "journal.drop_before_commit": "a chunk of sealed rows deleted from the open database, COMMIT not done",
    "anchor.before_tx": "Merkle root computed, anchorBatch not sent",
    "anchor.after_tx": "anchorBatch mined, the anchor not recorded in the journal",
    "anchor.after_record": "anchor mined and recorded",
    "reconcile.after_repair": "hcl gateway reconcile made its first repair, the others not yet",
}

_lock = threading.Lock()
_counts: dict[str, int] = {}


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, nth = value.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV}={value!r}: unknown crash point (see gateway.crashpoints.POINTS)")
    count = int(nth) if nth else 1
    if count < 1:
        raise ValueError(f"{ENV}={value!r}: the count must be >= 1")
    return name, count


_ARMED = _parse(os.environ.get(ENV))


def crashpoint(name: str) -> None:
    """Kills the process with SIGKILL if ``HCL_TEST_CRASH_AT`` names this point (and count); else nothing."""
    if _ARMED is None:
        return
    if name not in POINTS:
        raise ValueError(f"unknown crash point {name!r}")
    target, count = _ARMED
    if name != target:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        if _counts[name] != count:
            return
        sys.stderr.write(f"crash point {name}:{count} reached: SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
