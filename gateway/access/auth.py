"""Who is calling: Sign-In with Ethereum (EIP-4361) challenges and short-lived bearer tokens.

1. ``POST /v1/auth/challenge {address}`` → the gateway writes an EIP-4361 message with a fresh nonce and
   stores it (the exact text) with an expiry.
2. The caller signs the text with its key (EIP-191 ``personal_sign``) and posts it back.
3. The gateway looks up the stored message by nonce, requires the text to be identical, recovers the
   signer, and marks the nonce used in the same statement that checks it was unused (single use, even
   under concurrent posts). It answers with a bearer token bound to the address, valid ≤ 15 minutes.

Tokens are HMAC-SHA256 over (address, issue time, expiry, id) with a key only the gateway holds: checking
one costs no I/O. They carry no roles: membership and roles are re-checked against the chain on every
sensitive call (from the read model once the gateway has seen the block, see :mod:`gateway.access.policy`), so a
suspension takes effect whatever tokens exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_address, to_checksum_address

from gateway import errors
from gateway.storage import nonces
from gateway.storage.db import Database

__all__ = ["Authenticator", "Challenge", "Token", "load_or_create_key"]

_NONCE_RE = re.compile(r"^Nonce: ([A-Za-z0-9]{16,64})$", re.MULTILINE)
TOKEN_PREFIX = "hcl1"


@dataclass(frozen=True, slots=True)
class Challenge:
    message: str
    nonce: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class Token:
    token: str
    address: str
    expires_at: int


def load_or_create_key(path: Path) -> bytes:
    """A 32-byte secret key (the token MAC key, the index key): random, in a 0600 file created on first start."""
    if path.exists():
        key = path.read_bytes()
        if len(key) != 32:
            raise ValueError(f"{path} must hold 32 bytes")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Authenticator:
    """Issues challenges and tokens; verifies tokens."""

    def __init__(
        self,
        db: Database,
        key: bytes,
        *,
        domain: str,
        uri: str,
        chain_id: int,
        token_ttl: int = 900,
        challenge_ttl: int = 300,
    ) -> None:
        self.db = db
        self._key = key
        self.domain = domain
        self.uri = uri
        self.chain_id = chain_id
        self.token_ttl = token_ttl
        self.challenge_ttl = challenge_ttl

    def challenge(self, address: str) -> Challenge:
        if not is_address(address):
            raise errors.InvalidRequest(f"{address!r} is not an Ethereum address")
        address = to_checksum_address(address)
        now = int(time.time())
        nonce = secrets.token_hex(16)
        expires = now + self.challenge_ttl
        message = (
            f"{self.domain} wants you to sign in with your Ethereum account:\n"
            f"{address}\n\n"
            "Sign in to the HealthCode Ledger gateway.\n\n"
            f"URI: {self.uri}\n"
            "Version: 1\n"
            f"Chain ID: {self.chain_id}\n"
            f"Nonce: {nonce}\n"
            f"Issued At: {_iso(now)}\n"
            f"Expiration Time: {_iso(expires)}"
        )
        with self.db.write() as conn:
            nonces.issue(conn, nonce, address, message, expires, forget_before=now - 3600)
        return Challenge(message, nonce, expires)

    def sign_in(self, message: str, signature: str) -> Token:
        """Verifies a signed challenge and consumes its nonce."""
        match = _NONCE_RE.search(message or "")
        if match is None:
            raise errors.InvalidSignature("the message is not a challenge of this gateway")
        nonce = match.group(1)
        issued = nonces.find(self.db, nonce)
        if issued is None or issued.message != message:
            raise errors.InvalidSignature("the message is not a challenge of this gateway")
        try:
            sig = bytes.fromhex(signature.removeprefix("0x"))
            recovered = Account.recover_message(encode_defunct(text=message), signature=sig)
        except Exception:  # noqa: BLE001 - any malformed message or signature is a refusal, never a 500
            raise errors.InvalidSignature("malformed signature") from None
        if recovered != issued.address:
            raise errors.InvalidSignature("the signature is not by the challenged address")
        now = int(time.time())
        if issued.used_at is not None or issued.expires_at < now:
            raise errors.ReplayedNonce("this sign-in nonce was already used or has expired")
        with self.db.write() as conn:
            first_use = nonces.consume(conn, nonce, now)
        if not first_use:
            raise errors.ReplayedNonce("this sign-in nonce was already used")
        return self.issue(issued.address)

    def issue(self, address: str) -> Token:
        now = int(time.time())
        exp = now + self.token_ttl
        payload = orjson.dumps({"sub": address, "iat": now, "exp": exp, "jti": secrets.token_hex(8)})
        body = _b64(payload)
        mac = hmac.new(self._key, f"{TOKEN_PREFIX}.{body}".encode(), hashlib.sha256).digest()
        return Token(f"{TOKEN_PREFIX}.{body}.{_b64(mac)}", address, exp)

    def verify(self, token: str) -> str:
        """The address a valid, unexpired token is bound to."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            raise errors.Unauthenticated("malformed bearer token")
        try:
            mac = _unb64(parts[2])
            payload = orjson.loads(_unb64(parts[1]))
        except Exception:  # noqa: BLE001 - any malformed message or signature is a refusal, never a 500
            raise errors.Unauthenticated("malformed bearer token") from None
        expected = hmac.new(self._key, f"{TOKEN_PREFIX}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise errors.Unauthenticated("invalid bearer token")
        if not isinstance(payload, dict) or int(payload.get("exp", 0)) < time.time():
            raise errors.TokenExpired("sign in again")
        return str(payload["sub"])
