"""``gateway.ledger.indexer_state``: a worker's follower decides from the primary indexer's published state."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.ledger.indexer import Indexer
from gateway.ledger.indexer_state import IndexerFollower, SharedIndexerState
from gateway.storage.db import Database
from node_client.deploy import Ledger, Manifest
from tests.support.chain import Chain


def _pair(tmp_path: Path, ledger: Ledger, manifest: Manifest) -> tuple[Indexer, IndexerFollower]:
    primary = Indexer(ledger, Database(tmp_path / "gateway.db"), deploy_block=manifest.deploy_block)
    primary.on_change = SharedIndexerState(tmp_path / "indexer.state", create=True).publish
    follower = IndexerFollower(
        ledger,
        Database(tmp_path / "gateway.db"),
        SharedIndexerState(tmp_path / "indexer.state"),
        deploy_block=manifest.deploy_block,
        poll_interval=primary.poll_interval,
        confirmations=0,
    )
    return primary, follower


def test_the_follower_sees_what_the_primary_indexed(
    tmp_path: Path, ledger: Ledger, manifest: Manifest, chain: Chain
) -> None:
    primary, follower = _pair(tmp_path, ledger, manifest)
    assert follower.view() is None and not follower.synced  # nothing published yet: fail closed
    primary.poll_once()
    mine, theirs = primary.view(), follower.view()
    assert theirs is not None and theirs == mine and follower.synced
    assert follower.status().indexed_block == primary.indexed_block
    chain.mine()
    primary.poll_once()
    assert not follower.unchanged_since(theirs.generation)  # a page was applied: re-read
    assert follower.view() == primary.view()


def test_a_silent_primary_unsyncs_the_follower(tmp_path: Path, ledger: Ledger, manifest: Manifest) -> None:
    primary, follower = _pair(tmp_path, ledger, manifest)
    primary.poll_once()
    assert follower.synced
    time.sleep(follower.freshness + 0.1)  # no poll published since: the primary may be gone
    assert not follower.synced and follower.view() is None


def test_a_primary_error_unsyncs_the_follower(tmp_path: Path, ledger: Ledger, manifest: Manifest) -> None:
    primary, follower = _pair(tmp_path, ledger, manifest)
    primary.poll_once()
    primary._error = "chain unavailable: test"
    primary._changed()
    assert not follower.synced and follower.status().error == "chain unavailable: test"
