"""Filesystem durability helpers shared by the blob store, the journal and key files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["fsync_dir"]


def fsync_dir(directory: Path) -> None:
    """``fsync`` of a directory, so that a file created, renamed or removed in it survives a crash.

    A new file is not crash-safe until its directory entry is synced. Filesystems that cannot sync
    directories (EINVAL / ENOTSUP) are tolerated; any other failure is raised.
    """
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # pragma: no cover - filesystems without directory fsync
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
