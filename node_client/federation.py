"""Gateway-to-gateway requests: how one institution's gateway asks another's on a member's behalf.

A forwarding gateway signs each request with its member key (EIP-191 ``personal_sign``) over
:func:`signing_message`: the method, the path with its query, the SHA-256 of the body, the member it
acts for, a unix timestamp and a fresh nonce. The receiving gateway recovers the signer, checks that it
is an active GATEWAY member on chain, that the timestamp is within :data:`MAX_SKEW` seconds of its
clock and that it has not seen the nonce (:func:`verify_request` does the cryptography; the chain and
the nonce store are the receiver's). The format is in ``docs/federation.md``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Final

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address

__all__ = [
    "HEADERS",
    "MAX_SKEW",
    "FederationAuth",
    "SignedRequest",
    "signing_message",
    "verify_request",
]

#: the protocol's version tag, the first line of every signed message
_TAG: Final = "HCL-GATEWAY-REQUEST-V1"
#: seconds a signed request stays acceptable either side of the receiver's clock (nonces are kept as long)
MAX_SKEW: Final = 60
#: header names: the signing gateway, the member it acts for, timestamp, nonce, signature
HEADERS: Final = {
    "gateway": "X-HCL-Gateway",
    "acting_for": "X-HCL-Acting-For",
    "timestamp": "X-HCL-Timestamp",
    "nonce": "X-HCL-Nonce",
    "signature": "X-HCL-Signature",
}


def signing_message(
    method: str, target: str, body: bytes, *, gateway: str, acting_for: str, timestamp: int, nonce: str
) -> str:
    """The text a gateway signs. ``target`` is the path with its raw query string (``/v1/...?a=b``)."""
    return "\n".join(
        (
            _TAG,
            method.upper(),
            target,
            hashlib.sha256(body).hexdigest(),
            to_checksum_address(gateway),
            to_checksum_address(acting_for),
            str(timestamp),
            nonce,
        )
    )


def _target(url: httpx.URL) -> str:
    query = url.query.decode("ascii")
    return url.path + ("?" + query if query else "")


class FederationAuth(httpx.Auth):
    """Signs every request of an ``httpx`` client as ``gateway`` acting for ``acting_for``."""

    requires_request_body = True

    def __init__(self, gateway: LocalAccount, acting_for: str) -> None:
        self.gateway = gateway
        self.acting_for = to_checksum_address(acting_for)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        timestamp, nonce = int(time.time()), secrets.token_hex(16)
        message = signing_message(
            request.method,
            _target(request.url),
            request.content,
            gateway=self.gateway.address,
            acting_for=self.acting_for,
            timestamp=timestamp,
            nonce=nonce,
        )
        signature = Account.sign_message(encode_defunct(text=message), self.gateway.key).signature
        request.headers[HEADERS["gateway"]] = self.gateway.address
        request.headers[HEADERS["acting_for"]] = self.acting_for
        request.headers[HEADERS["timestamp"]] = str(timestamp)
        request.headers[HEADERS["nonce"]] = nonce
        request.headers[HEADERS["signature"]] = "0x" + bytes(signature).hex()
        yield request


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What a verified gateway request says: who signed it, for whom, when, with which nonce."""

    gateway: str
    acting_for: str
    timestamp: int
    nonce: str


def verify_request(
    method: str, target: str, body: bytes, headers: Mapping[str, str], *, now: int | None = None
) -> SignedRequest:
    """Checks the signature and the clock of a gateway request; raises ``ValueError`` saying what is wrong.

    Membership and nonce reuse are the receiver's checks (they need its chain view and its store)."""
    values = {key: headers.get(name, "").strip() for key, name in HEADERS.items()}
    missing = [HEADERS[k] for k, v in values.items() if not v]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    if not is_address(values["gateway"]) or not is_address(values["acting_for"]):
        raise ValueError(f"{HEADERS['gateway']} and {HEADERS['acting_for']} are addresses")
    if not values["timestamp"].isdigit() or not 16 <= len(values["nonce"]) <= 64:
        raise ValueError("the timestamp is unix seconds and the nonce 16 to 64 characters")
    timestamp = int(values["timestamp"])
    if abs((int(time.time()) if now is None else now) - timestamp) > MAX_SKEW:
        raise ValueError(f"the request was signed more than {MAX_SKEW}s away from this gateway's clock")
    signed = SignedRequest(
        to_checksum_address(values["gateway"]), to_checksum_address(values["acting_for"]), timestamp, values["nonce"]
    )
    message = signing_message(
        method,
        target,
        body,
        gateway=signed.gateway,
        acting_for=signed.acting_for,
        timestamp=timestamp,
        nonce=signed.nonce,
    )
    try:
        signer = Account.recover_message(encode_defunct(text=message), signature=values["signature"])
    except Exception as exc:  # noqa: BLE001 - any malformed signature is the same refusal
        raise ValueError(f"the signature is malformed ({type(exc).__name__})") from None
    if signer != signed.gateway:
        raise ValueError("the signature is not the named gateway's")
    return signed
