"""Key-encryption-key rotation: re-wrap every data key under a new KEK without touching ciphertext.

Crash-safe in three steps, each durable before the next:

1. the new KEK is written to ``<kek>.new`` (0600, fsynced);
2. every wrapped data key (and patients' category keys) is re-wrapped in ONE database transaction (all or
   nothing);
3. the old KEK file is renamed to ``<kek>.<old key id>.retired`` and ``<kek>.new`` to ``<kek>``.

If the process dies after 2 but before 3, :func:`finish_pending_rotation` (run at every start) sees that
the database already uses the new key id and completes the renames; if it died before 2, it removes the
unused ``.new`` file. Retired KEKs are kept for backups made before the rotation; delete them per policy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from gateway.storage.category_keys import key_binding
from gateway.storage.crypto import Kek, rewrap, wrapped_key_id
from gateway.storage.db import Database
from gateway.storage.fs import fsync_dir

__all__ = ["RotationResult", "finish_pending_rotation", "rotate_kek"]

log = logging.getLogger("hcl.gateway.keys")


@dataclass(frozen=True, slots=True)
class RotationResult:
    old_key_id: str
    new_key_id: str
    rewrapped: int


def _swap(kek_file: Path, old_id: str) -> None:
    pending = kek_file.with_name(kek_file.name + ".new")
    kek_file.replace(kek_file.with_name(f"{kek_file.name}.{old_id}.retired"))
    pending.replace(kek_file)
    fsync_dir(kek_file.parent)


def finish_pending_rotation(kek_file: Path, db: Database) -> None:
    """Completes or discards a rotation interrupted by a crash (see the module docstring)."""
    pending = kek_file.with_name(kek_file.name + ".new")
    if not pending.exists():
        return
    new = Kek.load(pending)
    old = Kek.load(kek_file)
    row = (
        db.read()
        .execute("SELECT COUNT(*) AS n FROM record_keys WHERE wrapped_key IS NOT NULL AND kek_id = ?", (old.key_id,))
        .fetchone()
    )
    keys = db.read().execute("SELECT wrapped FROM category_keys").fetchall()
    if row["n"] == 0 and not any(wrapped_key_id(bytes(k["wrapped"])) == old.key_id for k in keys):
        log.warning("completing an interrupted KEK rotation", extra={"new": new.key_id})
        _swap(kek_file, old.key_id)
    else:
        log.warning("discarding an unfinished KEK rotation", extra={"new": new.key_id})
        pending.unlink()


def rotate_kek(kek_file: Path, db: Database) -> RotationResult:
    """Generates a new KEK and re-wraps every data key under it. Run with the gateway stopped."""
    finish_pending_rotation(kek_file, db)
    old = Kek.load(kek_file)
    pending = kek_file.with_name(kek_file.name + ".new")
    new = Kek.generate(pending)
    with db.write() as conn:
        rows = conn.execute("SELECT record_id, wrapped_key FROM record_keys WHERE wrapped_key IS NOT NULL").fetchall()
        updates = [
            (
                rewrap(bytes(r["wrapped_key"]), record_id=bytes(r["record_id"]), old=old, new=new),
                new.key_id,
                r["record_id"],
            )
            for r in rows
        ]
        conn.executemany("UPDATE record_keys SET wrapped_key = ?, kek_id = ? WHERE record_id = ?", updates)
        keys = [
            (rewrap(bytes(r["wrapped"]), record_id=key_binding(r["patient"]), old=old, new=new), r["patient"])
            for r in conn.execute("SELECT patient, wrapped FROM category_keys").fetchall()
        ]
        conn.executemany("UPDATE category_keys SET wrapped = ? WHERE patient = ?", keys)
    _swap(kek_file, old.key_id)
    log.info(
        "KEK rotated",
        extra={"old": old.key_id, "new": new.key_id, "rewrapped": len(updates), "category_keys": len(keys)},
    )
    return RotationResult(old.key_id, new.key_id, len(updates) + len(keys))
