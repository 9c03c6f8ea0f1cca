"""Fixtures every browser test module shares: a seeded demo gateway per module, one Chromium, fresh pages.

A page's uncaught script errors fail the test that opened it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from demo import scenario as demo
from tests.browser.steps import TIMEOUT_MS
from tests.support.browser_harness import chromium
from tests.support.gateway_harness import SAMPLES, RunningGateway, running_gateway


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Path]]:
    tmp = tmp_path_factory.mktemp("portal")
    with running_gateway(tmp) as gw:
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    contexts: list[Any] = []
    errors: list[str] = []

    def make(**kwargs: Any) -> Any:
        ctx = browser.new_context(accept_downloads=True, **kwargs)
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert not errors, f"uncaught errors in the page: {errors}"
