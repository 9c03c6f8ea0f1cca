"""Prometheus metrics and JSON logs (never PHI: ids, addresses, codes and numbers only)."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["MULTIPROC_ENV", "JsonFormatter", "Metrics", "configure_logging"]

#: set by the primary of several processes for its workers: prometheus_client then keeps their values in
#: files there, and any worker's /metrics shows the sum of all of them
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("hcl")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class Metrics:
    """The gateway's metrics, in a registry of their own (one per app instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.releases = Counter("hcl_releases_total", "Records released", ["mode", "emergency"], registry=r)
        self.denials = Counter("hcl_denials_total", "Requests refused, by problem code", ["reason"], registry=r)
        self.forwarded = Counter(
            "hcl_forwarded_releases_total", "Releases forwarded to the holder's gateway (federation)", registry=r
        )
        self.peer_requests = Counter(
            "hcl_peer_requests_total", "Requests answered for another institution's gateway", ["kind"], registry=r
        )
        self.decisions = Counter(
            "hcl_consent_decisions_total",
            "Release consent decisions, by source (cache or chain)",
            ["source"],
            registry=r,
        )
        self.uploads = Counter("hcl_records_uploaded_total", "Records uploaded and registered", registry=r)
        self.key_handovers = Counter(
            "hcl_category_key_handovers_total", "Patients' category keys handed on, by to whom", ["to"], registry=r
        )
        self.integrity_errors = Counter(
            "hcl_integrity_errors_total", "Stored ciphertext not matching the on-chain hash", registry=r
        )
        self.request_seconds = Histogram(
            "hcl_request_seconds",
            "Request latency",
            ["route", "method", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.release_seconds = Histogram(
            "hcl_release_seconds",
            "Release latency (decision, fetch, decrypt, ledger)",
            ["mode"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.registration_uploads = Histogram(
            "hcl_registration_uploads",
            "Uploads registered per on-chain transaction (group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.strict_batch_entries = Histogram(
            "hcl_strict_batch_entries",
            "Releases ledgered per strict-mode transaction (logAccessBatch group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.indexer_lag = Gauge("hcl_indexer_lag_blocks", "Blocks the indexer is behind the head", registry=r)
        self.indexed_block = Gauge("hcl_indexed_block", "Last block indexed", registry=r)
        self.indexer_catching_up = Gauge(
            "hcl_indexer_catching_up",
            "1 until the read model has reached the head since start (or a rebuild)",
            registry=r,
        )
        self.anchor_lag = Gauge("hcl_anchor_lag_seconds", "Age of the oldest unanchored journal entry", registry=r)
        self.replication_backlog = Gauge(
            "hcl_replication_backlog_records", "Records waiting to be pinned by peer gateways (IPFS store)", registry=r
        )
        self.replication_failures = Counter(
            "hcl_replication_failures_total", "Pin requests to peer gateways that failed (retried)", registry=r
        )
        self.replicas_pinned = Counter(
            "hcl_replicas_pinned_total", "Other institutions' ciphertexts pinned here, verified", registry=r
        )
        self.webhook_deliveries = Counter(
            "hcl_webhook_deliveries_total",
            "Webhook delivery attempts, by outcome (delivered, failed)",
            ["outcome"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The text format: this registry's, or every worker's together (several processes)."""
        folder = os.environ.get(MULTIPROC_ENV)
        if not folder:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, folder)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
