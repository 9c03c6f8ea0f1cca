"""Asking another institution's gateway, on a member's behalf: discovery and release.

Each request is signed by this gateway's member key for the member it acts for
(:meth:`node_client.gateway_client.GatewayClient.act_for`). The holder's answer comes back as it is — a
release is sealed to the member's key and passes through unread. How the holder's failures reach the
member: no answer, a 5xx or a refusal of *this gateway* (401) is ``503 holder_unavailable``; a refusal
of the member (no consent, revoked, retracted, not found) is the holder's own problem, passed on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from eth_account.signers.local import LocalAccount

from gateway import errors
from gateway.federation.directory import Directory, Peer
from gateway.problems import PROBLEMS, Problem
from node_client._exceptions import GatewayProblem, GatewayUnavailable
from node_client.gateway_client import GatewayClient, connection_pool
from node_client.paging import encode_cursor

__all__ = ["Federation"]

log = logging.getLogger("hcl.gateway.federation")
T = TypeVar("T")


class Federation:
    """This gateway's side of the gateway-to-gateway protocol."""

    def __init__(self, directory: Directory, account: LocalAccount, *, timeout: float) -> None:
        self.directory = directory
        self.account = account
        self.timeout = timeout
        self._http: dict[str, httpx.Client] = {}  # one connection pool per peer endpoint, kept
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for http in self._http.values():
                http.close()
            self._http.clear()

    def _client(self, peer: Peer) -> GatewayClient:
        """A client of ``peer`` on its shared connection pool (a new pool costs ~25 ms of CPU)."""
        with self._lock:
            http = self._http.get(peer.endpoint)
            if http is None:
                http = self._http[peer.endpoint] = connection_pool(peer.endpoint, timeout=self.timeout)
        return GatewayClient(peer.endpoint, http=http)

    def discover(
        self,
        peer: Peer,
        acting_for: str,
        patient: str,
        purpose: str,
        filters: dict[str, str],
        before: tuple[int, bytes] | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """The records ``peer`` holds of ``patient`` that ``acting_for`` may see (its answer, as a dict): all,
        or (``limit``) a page newest first below ``before`` (a peer too old to page answers all)."""
        cursor = encode_cursor(*before) if before is not None else None
        return self._ask(
            peer,
            acting_for,
            lambda gw: gw.holder_discover(patient, purpose=purpose, cursor=cursor, limit=limit, **filters),
        )

    def release(self, peer: Peer, acting_for: str, record_id: bytes, purpose: str) -> dict[str, Any]:
        """The record released by its holder ``peer`` to ``acting_for``: ledgered there, sealed to them."""
        rid = "0x" + record_id.hex()
        body = self._ask(peer, acting_for, lambda gw: gw.holder_release(rid, purpose))
        if str(body.get("recordId", "")).lower() != rid or body.get("ledger") is None:
            raise errors.HolderUnavailable(
                f"{_label(peer)} answered with something other than the record", holder=peer.address
            )
        return body

    def accesses(
        self, peer: Peer, patient: str, before: tuple[int, bytes] | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """``peer``'s journal entries of ``patient`` (acting for the patient), each with its proof, unchecked:
        all, or (``limit``) a page newest first below ``before`` (a peer too old to page answers all)."""
        cursor = encode_cursor(*before) if before is not None else None
        body = self._ask(peer, patient, lambda gw: gw.holder_accesses(patient, cursor=cursor, limit=limit))
        entries = body.get("entries")
        if not isinstance(entries, list):
            raise errors.HolderUnavailable(f"{_label(peer)} answered without entries", holder=peer.address)
        return [e for e in entries if isinstance(e, dict)]

    def pin(self, peer: Peer, record_ids: list[bytes]) -> dict[str, Any]:
        """Asks ``peer`` to pin the ciphertexts of records this gateway registered (acting for itself); the
        peer fetches them through the swarm and checks them against the chain. Only ciphertext moves."""
        ids = ["0x" + rid.hex() for rid in record_ids]
        return self._ask(peer, self.account.address, lambda gw: gw.holder_pin(ids))

    def _ask(self, peer: Peer, acting_for: str, call: Callable[[GatewayClient], T]) -> T:
        with self._client(peer) as gw:
            gw.act_for(self.account, acting_for)
            try:
                return call(gw)
            except GatewayUnavailable as exc:
                log.warning("holder gateway unavailable", extra={"gateway": peer.address, "error": str(exc)})
                raise errors.HolderUnavailable(
                    f"{_label(peer)} does not answer; nothing was released", holder=peer.address
                ) from None
            except GatewayProblem as exc:
                raise _passed_on(peer, exc) from None


def _passed_on(peer: Peer, exc: GatewayProblem) -> Exception:
    """The holder's problem as this gateway answers it (see the module docstring)."""
    if exc.status >= 500 or exc.status == 401 or exc.code not in PROBLEMS:
        return errors.HolderUnavailable(
            f"{_label(peer)} answered {exc.status} {exc.code}: {exc.detail or exc.title}; nothing was released",
            holder=peer.address,
        )
    return Problem(exc.code, f"{_label(peer)}: {exc.detail or exc.title}", status=exc.status, holder=peer.address)


def _label(peer: Peer) -> str:
    return f"the holder's gateway ({peer.name or peer.address})"
