"""A real browser for the portal tests: Playwright driving Debian's Chromium (/usr/bin/chromium).

Browser downloads are impossible here, so Playwright never installs its own: it launches the system
Chromium. Without one the browser tests skip, unless ``HCL_REQUIRE_BROWSER=1`` (CI), where they fail.
Screenshots go to ``artifacts/screenshots/`` (``HCL_SCREENSHOTS`` to change), which CI keeps.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("HCL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = Path(
    os.environ.get("HCL_SCREENSHOTS") or Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
)


def require_browser() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("HCL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium); HCL_REQUIRE_BROWSER=1 makes this fail")


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium browser (Playwright ``Browser``)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def shot(page, name: str, *, full_page: bool = True) -> Path:  # type: ignore[no-untyped-def]
    """Saves a screenshot of ``page`` as ``artifacts/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
