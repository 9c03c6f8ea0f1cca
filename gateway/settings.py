"""Gateway settings: the CLI's :class:`ClientSettings` plus what the service needs.

Sources, highest first: explicit arguments, ``HCL_*`` environment variables, ``.env``, a TOML file
(``HCL_CONFIG``, default ``hcl.toml`` if present), then the defaults. Paths default under ``data_dir``
so a whole gateway lives in one directory that can be backed up.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from node_client.settings import ClientSettings

__all__ = ["GatewaySettings", "LedgerMode", "StoreKind"]


class LedgerMode(StrEnum):
    """How releases are ledgered before any byte leaves."""

    STRICT = "strict"  # each release's entry mined, checked on-chain (logAccessBatch, group commit)
    BATCH = "batch"  # a durable, hash-chained journal row; Merkle roots anchored on-chain


class StoreKind(StrEnum):
    LOCAL = "local"
    IPFS = "ipfs"


class GatewaySettings(ClientSettings):
    """Everything a gateway process needs to run."""

    model_config = SettingsConfigDict(
        env_prefix="HCL_", env_file=".env", env_ignore_empty=True, extra="ignore", toml_file="hcl.toml"
    )

    host: str = Field("127.0.0.1", description="interface to bind")
    port: int = Field(8000, ge=1, le=65535)
    keep_alive: int = Field(
        15,
        ge=1,
        description="seconds an idle HTTP connection stays open; longer than clients keep idle connections "
        "(node_client.gateway_client.KEEPALIVE_EXPIRY), so a client never reuses one the gateway is closing",
    )
    public_url: str = Field("", description="URL clients use (SIWE domain); default http://host:port")
    data_dir: Path = Field(Path(".hcl/gateway"), description="database, blobs, journal, keys")
    kek_file: Path | None = Field(None, description="key-encryption key file; default <data_dir>/kek.key")
    gateway_key: Path | None = Field(None, description="keystore of the gateway's member account")
    gateway_key_password_file: Path | None = None
    gateway_dev_account: int | None = Field(None, description="Hardhat dev account index (dev chain only)")
    store: StoreKind = StoreKind.LOCAL
    ipfs_api: str = Field("/ip4/127.0.0.1/tcp/5001/http", description="Kubo RPC API multiaddr")
    ledger_mode: LedgerMode = LedgerMode.STRICT
    anchor_interval: float = Field(
        1.5,
        gt=0,
        description="seconds between Merkle anchors (batch mode); with the transaction, every entry is anchored within 2 s",
    )
    registration_batch_max: int = Field(
        200, gt=0, le=1000, description="most records registered in one transaction (uploads are group-committed)"
    )
    anchor_threshold: int = Field(10_000, gt=0, description="anchor early after this many new entries")
    journal_segment_entries: int = Field(
        1_000_000,
        ge=0,
        description="batch mode: seal the journal's open segment into a read-only file once it holds this"
        ' many entries (0: never by size; docs/audit.md, "Segments")',
    )
    journal_segment_seconds: float = Field(
        0.0, ge=0, description="batch mode: also seal the open segment once it is this old (s; 0: never by age)"
    )
    strict_batch_max: int = Field(
        64,
        ge=1,
        le=500,
        description="strict mode: most releases ledgered in one logAccessBatch transaction (group commit; the"
        " next batch is sent when the previous one is confirmed); 1 sends one transaction per release",
    )
    max_body_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_bundle_entries: int = Field(10_000, gt=0)
    token_ttl: int = Field(900, gt=0, le=900, description="bearer token lifetime, seconds (<= 15 min)")
    challenge_ttl: int = Field(300, gt=0)
    plaintext_responses: bool = Field(
        False, description="release FHIR JSON unencrypted (only behind TLS termination you trust)"
    )
    indexer_poll: float = Field(0.25, gt=0, description="seconds between chain polls")
    notify_poll: float = Field(
        0.25, gt=0, description="seconds between looks for new accesses (live streams, webhooks; docs/notifications.md)"
    )
    sse_heartbeat: float = Field(15.0, gt=0, description="seconds between keep-alive comments on an idle event stream")
    webhook_timeout: float = Field(5.0, gt=0, description="seconds a webhook receiver has to answer a delivery")
    webhook_backoff: float = Field(
        2.0, gt=0, description="seconds before a failed delivery's first retry (doubled each time)"
    )
    webhook_backoff_max: float = Field(3600.0, gt=0, description="the longest wait between two tries of a delivery")
    federation_timeout: float = Field(
        10.0, gt=0, description="seconds to wait for another institution's gateway (discovery, forwarded releases)"
    )
    replicas: int = Field(
        1,
        ge=0,
        description="IPFS store: how many other institutions' gateways pin each record's ciphertext (0: none)",
    )
    confirmations: int | None = Field(
        None,
        ge=0,
        description="blocks on top of a block before a grant in it counts (strict receipts, anchors too);"
        " default: the manifest's (0 on Hardhat and QBFT, 3 on Clique)",
    )
    max_head_age: float | None = Field(
        None,
        gt=0,
        description="/healthz fails when the chain's newest block is older than this (s); default 30 block"
        " periods of the manifest, none on a chain that seals only when there are transactions",
    )
    max_anchor_lag: float = Field(
        30.0,
        gt=0,
        description="batch mode: releases are refused (503 anchor_lagging) once the oldest unanchored"
        " journal entry is older than this (s)",
    )
    workers: int = Field(
        1,
        ge=1,
        le=32,
        description="HTTP worker processes (batch mode). Above 1 a primary process owns the journal, the anchorer"
        " and the indexer; the workers share the port and append to the journal over a Unix socket (docs/performance.md)",
    )
    display_timezone: str = Field("Asia/Shanghai", description="time zone of times shown on portal pages")
    portal_page_size: int = Field(
        50, ge=1, le=200, description='rows per page of the portal\'s lists (a "more records" button loads the next)'
    )
    audit_reports_dir: Path | None = Field(
        None,
        description="folder of `hcl audit replay --out` folders listed on the auditor page; default <data_dir>/audit",
    )
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _defaults(self) -> GatewaySettings:
        if self.kek_file is None:
            self.kek_file = self.data_dir / "kek.key"
        if self.workers > 1 and self.ledger_mode is not LedgerMode.BATCH:
            raise ValueError("workers > 1 needs ledger_mode batch (strict mode's group commit is per process)")
        if not self.public_url:
            self.public_url = f"http://{self.host}:{self.port}"
        return self

    @property
    def db_path(self) -> Path:
        return self.data_dir / "gateway.db"

    @property
    def journal_path(self) -> Path:
        return self.data_dir / "journal.db"

    @property
    def journal_socket(self) -> Path:
        """Where the primary of several processes serves the journal to its workers."""
        return self.data_dir / "journal.sock"

    @property
    def journal_status_path(self) -> Path:
        """The primary's journal check (JSON, rewritten every 0.2 s), shown by the workers' /healthz."""
        return self.data_dir / "journal.status.json"

    @property
    def indexer_state_path(self) -> Path:
        """The primary indexer's state, memory-mapped by the workers."""
        return self.data_dir / "indexer.state"

    @property
    def nonce_lock_path(self) -> Path:
        """Serialises the gateway account's transactions across its processes."""
        return self.data_dir / "nonce.lock"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def token_key_file(self) -> Path:
        return self.data_dir / "token.key"

    @property
    def index_key_file(self) -> Path:
        """The HMAC key of the gateway's keyed indexes (resource identities, the identifier lookup)."""
        return self.data_dir / "index.key"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path: Any = os.environ.get("HCL_CONFIG") or "hcl.toml"
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
            file_secret_settings,
        )
