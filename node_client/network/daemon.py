"""What every daemon of the network shares (a geth validator, a Kubo node, a gateway): it runs detached in
its own process group with its output appended to one log, is waited for until it says it is ready, and
is stopped, frozen or thawed later by PID alone — by another process than the one that started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from node_client._exceptions import NodeError

__all__ = ["Daemon", "stop_pid"]


class Daemon:
    """Mixin of a daemon's lifecycle; the dataclass using it has ``name``, ``pid`` and a ``log_path``."""

    name: str
    pid: int | None
    #: seconds between SIGTERM and SIGKILL (a node flushing its database gets time)
    stop_grace: float = 20.0

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    @property
    def label(self) -> str:
        """What errors call the daemon (its institution's name, unless it says more)."""
        return self.name

    @property
    def running(self) -> bool:
        return self.pid is not None and not _gone(self.pid)

    def launch(
        self,
        command: Sequence[str],
        *,
        ready: Callable[[int], bool],
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        poll: float = 0.1,
    ) -> int:
        """Starts ``command`` detached and waits until ``ready(log offset of this start)`` holds; on exit
        or timeout it is stopped and :class:`NodeError` carries the log's tail."""
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            proc = subprocess.Popen(
                list(command),
                env=None if env is None else dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop_pid signals all of it
            )
        finally:
            log.close()
        self.pid = proc.pid
        deadline = time.monotonic() + timeout
        while not ready(log_start):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise NodeError(f"{self.label} did not start; log {self.log_path}:\n{self.log_tail()}")
            time.sleep(poll)
        return proc.pid

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after :attr:`stop_grace` seconds."""
        if self.pid is not None:
            stop_pid(self.pid, self.stop_grace)
        self.pid = None

    def freeze(self) -> None:
        """SIGSTOP: the daemon keeps its state but stops answering (a hung node)."""
        if self.pid is not None:
            os.killpg(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.pid is not None:
            os.killpg(self.pid, signal.SIGCONT)

    def logged_since(self, offset: int, text: bytes) -> bool:
        """Whether the log holds ``text`` after ``offset`` (what this start wrote)."""
        with contextlib.suppress(OSError), open(self.log_path, "rb") as fh:
            fh.seek(offset)
            return text in fh.read()
        return False

    def log_tail(self, limit: int = 3000) -> str:
        with contextlib.suppress(OSError), open(self.log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode("utf-8", "replace")
        return ""


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (reaping it if it is our child, so a zombie does not look alive)."""
    with contextlib.suppress(ChildProcessError):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def stop_pid(pid: int, grace: float) -> None:
    """Stops the process group led by ``pid``: SIGTERM, then SIGKILL if it outlives ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGCONT)  # a frozen daemon cannot act on SIGTERM
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while not _gone(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + grace
        time.sleep(0.1)
