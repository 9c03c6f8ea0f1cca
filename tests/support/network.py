"""A real geth Clique network for tests: built once per machine (``scripts/build_geth``), one per module.

Without geth the network tests skip, unless ``HCL_REQUIRE_GETH=1`` (CI), where they fail: a consortium
feature that was never run on a consortium chain must not pass by skipping.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from node_client._exceptions import NodeError
from node_client.network import Consortium, Network
from node_client.network.geth import find_geth

__all__ = ["need_geth", "start_network", "wait_until"]


def need_geth() -> Path:
    """The geth binary, or a skip (a failure under ``HCL_REQUIRE_GETH=1``)."""
    try:
        return find_geth()
    except NodeError as exc:
        if os.environ.get("HCL_REQUIRE_GETH", "") not in ("", "0"):
            pytest.fail(f"geth required (HCL_REQUIRE_GETH) but unavailable: {exc}", pytrace=False)
        pytest.skip(str(exc))


def start_network(folder: Path, consortium: Consortium) -> Network:
    """A network in ``folder``, up and deployed (manifest ``folder/manifest.json``)."""
    need_geth()
    network = Network(folder)
    try:
        network.up(consortium, manifest_path=folder / "manifest.json", timeout=180)
    except BaseException:
        network.down()
        raise
    return network


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.25) -> None:
    """Polls ``condition`` until it holds; fails the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
