"""The gateway's lock: one gateway, or one ``hcl gateway reconcile``, per data directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["GatewayLock", "GatewayRunning"]


class GatewayRunning(Exception):
    """Another process (a running gateway, or reconcile) holds ``<data_dir>/gateway.lock``."""


class GatewayLock:
    """An exclusive ``flock`` on ``<data_dir>/gateway.lock``: one gateway (or reconcile) per data dir.

    The kernel drops it when the process dies, kill -9 included, so a crash never leaves it stale.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "gateway.lock"
        self._fd = -1

    def acquire(self) -> GatewayLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise GatewayRunning(f"{self.path} is held: a gateway (or reconcile) is running on this data dir") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> GatewayLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
