"""``gateway.ledger.journal_service``: workers append to one journal over a Unix socket.

A real journal, a real socket, real processes (a worker killed with SIGKILL mid-load); no chain.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ledger.journal import Journal, JournalUnavailable
from gateway.ledger.journal_service import AnchorsLagging, JournalAppender, JournalClient, JournalServer
from tests.gateway.test_journal import entry


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory: a Unix socket path must fit in 108 bytes, pytest's tmp_path may not."""
    with tempfile.TemporaryDirectory(prefix="hclj", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture
def served(short_dir: Path) -> Iterator[tuple[Journal, JournalServer]]:
    journal = Journal(short_dir / "journal.db")
    server = JournalServer(journal, short_dir / "journal.sock").start()
    yield journal, server
    server.stop()
    journal.close()


def test_both_implementations_are_appenders(served: tuple[Journal, JournalServer]) -> None:
    journal, server = served
    appenders: list[JournalAppender] = [journal, JournalClient(server.path)]
    assert all(a.available for a in appenders)


def test_appends_from_two_clients_are_durable_once_each(served: tuple[Journal, JournalServer]) -> None:
    journal, server = served
    clients = [JournalClient(server.path), JournalClient(server.path)]
    got: dict[int, int] = {}  # entry number -> its index

    def load(client: JournalClient, start: int) -> None:
        for i in range(start, start + 200):
            got[i] = client.append(entry(i))

    threads = [threading.Thread(target=load, args=(c, n * 1000)) for n, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got.values()) == list(range(400)) == list(range(journal.size))
    stored = {idx: e for idx, e, _leaf in journal.entries()}
    assert all(stored[idx] == entry(i) for i, idx in got.items())
    journal.verify_chain()
    for c in clients:
        c.close()


def test_concurrent_async_appends_share_commits(served: tuple[Journal, JournalServer]) -> None:
    journal, server = served
    client = JournalClient(server.path)

    async def many() -> list[int]:
        return await asyncio.gather(*(client.append_async(entry(i)) for i in range(300)))

    indexes = asyncio.run(many())
    assert sorted(indexes) == list(range(300))
    assert journal.commits < 300  # pipelined requests joined group commits
    client.close()


def test_primary_gone_means_unavailable_then_back(short_dir: Path) -> None:
    path = short_dir / "journal.sock"
    client = JournalClient(path)
    assert not client.available
    with pytest.raises(JournalUnavailable):
        client.append(entry(0))
    journal = Journal(short_dir / "journal.db")
    server = JournalServer(journal, path).start()
    assert client.append(entry(1)) == 0
    server.stop()
    with pytest.raises(JournalUnavailable):
        client.append(entry(2))  # the connection was dropped: fail closed, not queued
    assert not client.available and client.error is not None
    server = JournalServer(journal, path).start()
    assert client.append(entry(3)) == 1  # reconnected
    server.stop()
    journal.close()
    client.close()


def test_a_failed_journal_refuses_every_append(served: tuple[Journal, JournalServer]) -> None:
    journal, server = served
    client = JournalClient(server.path)
    assert client.append(entry(0)) == 0
    journal.close()
    with pytest.raises(JournalUnavailable):
        client.append(entry(1))
    client.close()


_WORKER = textwrap.dedent(
    """
    import sys
    from gateway.ledger.journal_service import JournalClient
    from tests.gateway.test_journal import entry
    client = JournalClient(sys.argv[1])
    i = 0
    while True:
        print(i, client.append(entry(i)), flush=True)
        i += 1
    """
)


def test_kill_9_of_a_worker_mid_load_loses_nothing_durable(served: tuple[Journal, JournalServer]) -> None:
    journal, server = served
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(server.path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert worker.stdout is not None
    answered = [tuple(map(int, worker.stdout.readline().split())) for _ in range(150)]
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    stored = {idx: e for idx, e, _leaf in journal.entries()}
    assert all(stored[idx] == entry(i) for i, idx in answered)  # every answered append is there
    survivor = JournalClient(server.path)
    assert survivor.append(entry(10_000)) == journal.size - 1  # the writer serves on
    journal.verify_chain()
    survivor.close()


def test_lagging_anchors_refuse_appends_as_lagging(short_dir: Path) -> None:
    journal = Journal(short_dir / "journal.db")
    problem: list[str] = []
    server = JournalServer(journal, short_dir / "journal.sock", lagging=lambda: problem[0] if problem else None)
    server.start()
    client = JournalClient(server.path)
    assert client.append(entry(0)) == 0
    problem.append("anchors lag")
    with pytest.raises(AnchorsLagging):
        client.append(entry(1))
    assert journal.size == 1 and client.available  # refused, not journaled; the connection stays
    server.stop()
    journal.close()
    client.close()
