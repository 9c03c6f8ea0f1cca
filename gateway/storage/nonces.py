"""Nonces: each sign-in challenge the gateway issued, until it is used or expires (``nonces``); and each
gateway-to-gateway request's nonce, for as long as the request could be replayed (``peer_nonces``)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.storage.db import Database

__all__ = ["SignInNonce", "consume", "find", "issue", "remember_peer_nonce"]


@dataclass(frozen=True, slots=True)
class SignInNonce:
    """A sign-in nonce: the challenge message to be signed by ``address``."""

    address: str
    message: str
    expires_at: int
    used_at: int | None


def issue(
    conn: sqlite3.Connection, nonce: str, address: str, message: str, expires_at: int, *, forget_before: int
) -> None:
    """Records a new challenge, first forgetting those that expired before ``forget_before``."""
    conn.execute("DELETE FROM nonces WHERE expires_at < ?", (forget_before,))
    conn.execute(
        "INSERT INTO nonces (nonce, address, message, expires_at) VALUES (?, ?, ?, ?)",
        (nonce, address, message, expires_at),
    )


def find(db: Database, nonce: str) -> SignInNonce | None:
    row = (
        db.read()
        .execute("SELECT address, message, expires_at, used_at FROM nonces WHERE nonce = ?", (nonce,))
        .fetchone()
    )
    if row is None:
        return None
    used_at = row["used_at"]
    return SignInNonce(
        str(row["address"]), str(row["message"]), int(row["expires_at"]), None if used_at is None else int(used_at)
    )


def consume(conn: sqlite3.Connection, nonce: str, now: int) -> bool:
    """Marks the nonce used at ``now``; ``False`` if it already was (or never existed)."""
    used = conn.execute("UPDATE nonces SET used_at = ? WHERE nonce = ? AND used_at IS NULL", (now, nonce)).rowcount
    return used == 1


def remember_peer_nonce(conn: sqlite3.Connection, gateway: str, nonce: str, expires_at: int, now: int) -> bool:
    """Records a gateway request's nonce (forgetting expired ones); ``False`` if that gateway used it before."""
    conn.execute("DELETE FROM peer_nonces WHERE expires_at < ?", (now,))
    added = conn.execute(
        "INSERT OR IGNORE INTO peer_nonces (gateway, nonce, expires_at) VALUES (?, ?, ?)", (gateway, nonce, expires_at)
    ).rowcount
    return added == 1
