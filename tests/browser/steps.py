"""Steps the browser tests take the way a person would: unlock a keystore, make a health code, save a page.

``shot`` is the one way a test saves a page: it runs axe first, so every saved state is checked.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console

from demo import scenario as demo
from tests.support import browser_harness
from tests.support.axe import assert_accessible
from tests.support.gateway_harness import SAMPLES, RunningGateway, running_gateway

WANG, LI = 10, 11
TIMEOUT_MS = 120_000  # scrypt keystore decryption in JavaScript takes seconds on a busy 2-core machine


def shot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Checks ``page`` with axe (zero WCAG 2.1 A/AA violations), then saves its screenshot."""
    assert_accessible(page, name)
    return browser_harness.shot(page, name, full_page=full_page)


def unlock(page: Any, keystore: Path, password: str = "demo", enc_key: Path | None = None) -> None:
    page.set_input_files("#keystore", str(keystore))
    page.fill("#password", password)
    if enc_key is not None:
        page.set_input_files("#enckey", str(enc_key))
    page.click("#unlock-button")
    page.wait_for_selector("#key-status[data-state=unlocked]")


def local_time(gw: RunningGateway, ts: int) -> str:
    zone = ZoneInfo(gw.settings.display_timezone)
    return datetime.fromtimestamp(ts, UTC).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def make_code(page: Any, grantee: str, categories: list[str]) -> Path:
    page.select_option("#grantee", grantee)
    for slug in categories:
        page.check(f"#code-form input[name=categories][value={slug}]")
    page.click("#code-form button[type=submit]")
    page.wait_for_selector("#health-code img")
    with page.expect_download() as dl:
        page.click("#download-png")
    path = Path(dl.value.path())
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


@contextlib.contextmanager
def seeded_gateway(tmp: Path, **settings: Any) -> Iterator[tuple[RunningGateway, Path]]:
    """A gateway (with ``settings``) and the demo seeded on it; the demo's keystores under ``tmp/keys``."""
    with running_gateway(tmp, **settings) as gw:
        keys = tmp / "keys"
        demo.seed(
            url=gw.url,
            manifest=gw.settings.manifest,
            rpc_url=gw.settings.rpc_url,
            keys_dir=keys,
            samples=SAMPLES,
            console=Console(file=io.StringIO()),
        )
        yield gw, keys
