"""The gateway's HTTP protocol from the client's side: sign in, then call it with the bearer token.

Sign-in is EIP-4361 (Sign-In with Ethereum): ``POST /v1/auth/challenge`` gives a message, the account
signs it with ``personal_sign``, ``POST /v1/auth/token`` returns a bearer token bound to the address.
Problem responses become :class:`GatewayProblem` and an unreachable gateway :class:`GatewayUnavailable`,
so callers branch on types, not on status codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from node_client._exceptions import GatewayProblem, GatewayUnavailable

__all__ = ["GatewayClient"]


class GatewayClient:
    """One gateway, one signed-in account.

    >>> gw = GatewayClient("http://127.0.0.1:8000")
    >>> gw.sign_in(auditor)                 # doctest: +SKIP
    >>> gw.download_journal(Path("journal.jsonl"))   # doctest: +SKIP
    """

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.address: str | None = None
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sign_in(self, account: LocalAccount) -> str:
        """Signs in as ``account``; later calls carry its bearer token. Returns the token."""
        challenge = self._json("POST", "/v1/auth/challenge", json={"address": account.address})
        signature = Account.sign_message(encode_defunct(text=challenge["message"]), account.key).signature
        token = self._json(
            "POST", "/v1/auth/token", json={"message": challenge["message"], "signature": "0x" + bytes(signature).hex()}
        )
        if token["address"] != account.address:
            raise GatewayProblem(200, "invalid_signature", "the gateway bound the token to another address")
        self._http.headers["Authorization"] = f"Bearer {token['token']}"
        self.address = account.address
        return str(token["token"])

    def download_journal(self, out: Path) -> int:
        """Streams the gateway's release journal (auditors and regulators only) to ``out``; returns its bytes."""
        out = Path(out)
        tmp = out.with_name(out.name + ".part")
        size = 0
        try:
            with self._http.stream("GET", "/v1/journal") as resp:
                if resp.status_code != 200:
                    resp.read()
                    self._raise(resp)
                with open(tmp, "wb") as f:
                    for chunk in resp.iter_bytes():
                        f.write(chunk)
                        size += len(chunk)
        except httpx.TransportError as exc:
            raise GatewayUnavailable(f"{self.url} does not answer ({type(exc).__name__}: {exc})") from exc
        tmp.replace(out)
        return size

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayUnavailable(f"{self.url} does not answer ({type(exc).__name__}: {exc})") from exc
        if resp.status_code >= 400:
            self._raise(resp)
        return resp.json()

    @staticmethod
    def _raise(resp: httpx.Response) -> None:
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        raise GatewayProblem(
            resp.status_code,
            str(body.get("code", "http_error")),
            str(body.get("title", resp.reason_phrase)),
            str(body.get("detail", "")),
        )
