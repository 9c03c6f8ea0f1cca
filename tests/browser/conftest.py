"""Fixtures every browser test module shares: a seeded demo gateway per module, one Chromium, fresh pages.

A page's uncaught script errors fail the test that opened it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.steps import TIMEOUT_MS, seeded_gateway
from tests.support.browser_harness import chromium
from tests.support.gateway_harness import RunningGateway


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Path]]:
    with seeded_gateway(tmp_path_factory.mktemp("portal")) as seeded:
        yield seeded


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
