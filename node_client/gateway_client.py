"""The gateway's HTTP protocol from the client's side: the one place that speaks it.

Sign-in is EIP-4361 (Sign-In with Ethereum): ``POST /v1/auth/challenge`` gives a message, the account
signs it with ``personal_sign``, ``POST /v1/auth/token`` returns a bearer token bound to the address;
every later call carries it. Problem responses become :class:`GatewayProblem` and an unreachable gateway
:class:`GatewayUnavailable`, so callers branch on types, not on status codes. Answers are the gateway's
JSON as plain dicts (their fields are documented at the gateway's ``/docs``).

A release is sealed to the reader's registered X25519 key (HPKE, :mod:`node_client.hpke`):
:func:`open_release` (or :meth:`GatewayClient.open`) opens it with the reader's private key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from node_client import hpke
from node_client._exceptions import GatewayProblem, GatewayUnavailable
from node_client.federation import FederationAuth

__all__ = ["FHIR_JSON", "KEEPALIVE_EXPIRY", "GatewayClient", "connection_pool", "open_release"]

#: the media type of FHIR uploads
FHIR_JSON = "application/fhir+json"

#: seconds a pooled connection may sit idle before the client drops it: shorter than any gateway keeps one
#: (its ``keep_alive``, 15 s; uvicorn's own default is 5 s, as is httpx's). With equal timeouts a request
#: can go out on a connection the server is closing that instant, and comes back as a connection reset.
KEEPALIVE_EXPIRY = 4.0


#: the largest page a gateway gives (``limit``) of any list: what the iterators ask for unless told
PAGE_MAX = 200


def _paged(query: Mapping[str, str], cursor: str | None, limit: int | None) -> dict[str, str | int]:
    """``query`` with a page's ``cursor`` and ``limit`` (each only if given)."""
    params: dict[str, str | int] = dict(query)
    if cursor is not None:
        params["cursor"] = cursor
    if limit is not None:
        params["limit"] = limit
    return params


def _pages(fetch: Callable[[str | None], dict[str, Any]], items: str) -> Iterator[dict[str, Any]]:
    """Every item of a paged list: ``fetch(cursor)`` gives a page (``None``: the first), whose ``cursor``
    asks for the next; a gateway that does not page answers one page without it."""
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield from page[items]
        cursor = page.get("cursor")
        if not cursor:
            return


def connection_pool(url: str, *, timeout: float) -> httpx.Client:
    """The HTTP connection pool every client of a gateway uses (:data:`KEEPALIVE_EXPIRY`)."""
    return httpx.Client(base_url=url, timeout=timeout, limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY))


def open_release(body: dict[str, Any], private_key: X25519PrivateKey | bytes, requester: str) -> bytes:
    """The FHIR JSON of a release response, opened with the requester's X25519 private key.

    The HPKE ``info`` and ``aad`` are the protocol's (:data:`hpke.RELEASE_INFO`, :func:`hpke.release_aad`),
    never taken from the response. A gateway configured for plaintext responses sends ``resource`` instead
    of ``encryption``; its JSON is returned as is. Raises :class:`hpke.HpkeError` if it does not open.
    """
    if "encryption" not in body and "resource" in body:
        return orjson.dumps(body["resource"])
    raw = private_key.private_bytes_raw() if isinstance(private_key, X25519PrivateKey) else private_key
    try:
        enc = base64.b64decode(body["encryption"]["enc"], validate=True)
        ciphertext = base64.b64decode(body["encryption"]["ciphertext"], validate=True)
        record_id = bytes.fromhex(str(body["recordId"]).removeprefix("0x"))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise hpke.HpkeError(f"not a sealed release ({type(exc).__name__}: {exc})") from None
    aad = hpke.release_aad(record_id, requester)
    return hpke.open_sealed(raw, enc, ciphertext, info=hpke.RELEASE_INFO, aad=aad)


class GatewayClient:
    """One gateway, one signed-in account: every ``/v1`` call, answers as dicts.

    >>> gw = GatewayClient("http://127.0.0.1:8000")
    >>> gw.sign_in(clinic)                                          # doctest: +SKIP
    >>> body = gw.release(record_id, "treatment")                   # doctest: +SKIP
    >>> fhir = gw.open(body, clinic_x25519_private_key)             # doctest: +SKIP

    ``http`` is the underlying ``httpx.Client`` (base URL set, bearer token after :meth:`sign_in`), for
    callers that need a request the methods do not make.
    """

    def __init__(self, url: str, *, timeout: float = 60.0, http: httpx.Client | None = None) -> None:
        """``http``: an ``httpx.Client`` to share (base URL ``url``; not closed by :meth:`close`) — a new one
        costs tens of milliseconds of CPU (its TLS context), too much per request for a gateway forwarding."""
        self.url = url.rstrip("/")
        self.address: str | None = None
        self.token: str | None = None
        self._owns_http = http is None
        self.http = http if http is not None else connection_pool(self.url, timeout=timeout)
        self._auth: httpx.Auth | None = None

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ sign-in and the raw escape hatch

    def sign_in(self, account: LocalAccount) -> str:
        """Signs in as ``account``; later calls carry its bearer token. Returns the token."""
        challenge = self._json("POST", "/v1/auth/challenge", json={"address": account.address})
        signature = Account.sign_message(encode_defunct(text=challenge["message"]), account.key).signature
        token = self._json(
            "POST", "/v1/auth/token", json={"message": challenge["message"], "signature": "0x" + bytes(signature).hex()}
        )
        if token["address"] != account.address:
            raise GatewayProblem(200, "invalid_signature", "the gateway bound the token to another address")
        self.http.headers["Authorization"] = f"Bearer {token['token']}"
        self.address, self.token = account.address, str(token["token"])
        return self.token

    def act_for(self, gateway: LocalAccount, member: str) -> None:
        """Gateway-to-gateway: every later call is signed by ``gateway``'s member key on ``member``'s behalf
        (:mod:`node_client.federation`); for the ``/v1/federation`` calls, instead of a bearer token."""
        self.http.headers.pop("Authorization", None)
        self._auth = FederationAuth(gateway, member)  # per request: a shared ``http`` may serve other members
        self.address, self.token = member, None

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Any request, answered as the raw response whatever its status (tests of odd requests)."""
        if self._auth is not None:
            kwargs.setdefault("auth", self._auth)
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc

    # ------------------------------------------------------------ public: health and directory

    def health(self) -> dict[str, Any]:
        """``/healthz``: its body for 200 and for 503 (``status`` says ``ok`` or ``degraded``)."""
        resp = self.request("GET", "/healthz")
        if resp.status_code not in (200, 503):
            self._raise(resp)
        return self._body(resp)

    def members(self) -> list[dict[str, Any]]:
        """The consortium directory: address, name, roles, status, encryption key (every page of it)."""
        return list(
            _pages(lambda cursor: self._json("GET", "/v1/members", params=_paged({}, cursor, PAGE_MAX)), "members")
        )

    # ------------------------------------------------------------ category keys

    def category_key_request(self, patient: str) -> dict[str, Any]:
        """The ``CategoryKeyRequest`` ``patient`` signs to hand over her category key (``typedData``)."""
        return self._json("GET", "/v1/category-keys/request", params={"patient": patient})

    def enrol_category_key(self, patient: str, signature: bytes) -> dict[str, Any]:
        """Hands the patient's category key (her signed request) to the gateway; ``learned``: it is new there."""
        body = {"patient": patient, "signature": "0x" + signature.hex()}
        return self._json("POST", "/v1/category-keys", json=body)

    def category_key_of(self, patient: str) -> bytes:
        """The patient's category-key signature, handed to her or her current guardian (signed in); the caller
        checks that it is hers (:func:`node_client.blinding.category_key`)."""
        return bytes.fromhex(self._json("GET", f"/v1/category-keys/{patient}")["signature"][2:])

    # ------------------------------------------------------------ records

    def upload(self, patient: str, fhir: bytes) -> dict[str, Any]:
        """Uploads a FHIR R4 resource or Bundle for ``patient``: one record per category, one transaction."""
        return self._json(
            "POST", "/v1/records", params={"patient": patient}, content=fhir, headers={"Content-Type": FHIR_JSON}
        )

    def discover(
        self,
        patient: str,
        *,
        purpose: str = "treatment",
        cursor: str | None = None,
        limit: int | None = None,
        **filters: str,
    ) -> dict[str, Any]:
        """One page of record metadata of ``patient`` under the caller's consents, newest first; filters:
        ``category``, ``code``, ``since``; ``cursor`` (the previous page's) asks for the next page."""
        params = _paged({"purpose": purpose, **filters}, cursor, limit)
        return self._json("GET", f"/v1/patients/{patient}/records", params=params)

    def iter_discover(
        self, patient: str, *, purpose: str = "treatment", limit: int | None = None, **filters: str
    ) -> Iterator[dict[str, Any]]:
        """Every record :meth:`discover` finds, newest first, page after page (the peers' ``unavailable``
        and the consented categories are each page's: see :meth:`discover`)."""
        return _pages(
            lambda cursor: self.discover(patient, purpose=purpose, cursor=cursor, limit=limit, **filters), "records"
        )

    def release(self, record_id: str, purpose: str) -> dict[str, Any]:
        """A record released to the caller (consent checked, access ledgered), still sealed: see :meth:`open`."""
        return self._json("GET", f"/v1/records/{record_id}", params={"purpose": purpose})

    def lookup_patient(self, system: str, value: str, *, purpose: str = "treatment") -> dict[str, Any]:
        """The patient whose identifier ``system|value`` is (``patient``), if the caller holds her consent for
        ``identifiers``: a release of her identifiers record, ledgered (``release``, sealed: :meth:`open`).
        The identifier goes in the body, never in a URL. Unknown or not allowed: 404 ``patient_not_found``."""
        body = {"system": system, "value": value, "purpose": purpose}
        return self._json("POST", "/v1/patients/lookup", json=body)

    def holder_discover(
        self,
        patient: str,
        *,
        purpose: str = "treatment",
        cursor: str | None = None,
        limit: int | None = None,
        **filters: str,
    ) -> dict[str, Any]:
        """Gateway-to-gateway (after :meth:`act_for`): the records *this* gateway holds of ``patient`` that the
        member acted for may see, with the same filters as :meth:`discover`: all, or with ``limit`` a page,
        newest first, after ``cursor``."""
        params = _paged({"purpose": purpose, **filters}, cursor, limit)
        return self._json("GET", f"/v1/federation/patients/{patient}/records", params=params)

    def holder_release(self, record_id: str, purpose: str) -> dict[str, Any]:
        """Gateway-to-gateway (after :meth:`act_for`): a record this gateway holds, released to the member
        acted for — ledgered here and sealed to that member's key, so the asking gateway cannot open it."""
        return self._json("GET", f"/v1/federation/records/{record_id}", params={"purpose": purpose})

    def holder_accesses(self, patient: str, *, cursor: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """Gateway-to-gateway (after :meth:`act_for` the patient): this gateway's journal entries of the patient,
        each with its leaf hash, inclusion proof and anchor, for the patient's gateway to check (``entries``):
        all, or with ``limit`` a page, newest first, after ``cursor``."""
        params = _paged({}, cursor, limit)
        return self._json("GET", f"/v1/federation/patients/{patient}/accesses", params=params)

    def holder_pin(self, record_ids: list[str]) -> dict[str, Any]:
        """Gateway-to-gateway (after :meth:`act_for` the asking gateway itself): pin the ciphertexts of these
        records, which the asking gateway registered, on this gateway's IPFS node (``pinned``: their ids)."""
        return self._json("POST", "/v1/federation/pins", json={"recordIds": record_ids})

    def open(self, release: dict[str, Any], private_key: X25519PrivateKey | bytes) -> dict[str, Any]:
        """The FHIR resource or Bundle of a release to the signed-in account, opened with its X25519 key."""
        if self.address is None:
            raise GatewayProblem(401, "unauthenticated", "sign in first: a release is sealed to one reader")
        fhir: dict[str, Any] = orjson.loads(open_release(release, private_key, self.address))
        return fhir

    def erase(self, record_id: str) -> dict[str, Any]:
        """Erasure (the patient or the uploading provider): data key destroyed, record retracted on-chain."""
        return self._json("DELETE", f"/v1/records/{record_id}")

    # ------------------------------------------------------------ consents and relayed transactions

    def submit_consent(self, signed_grant: dict[str, Any]) -> dict[str, Any]:
        """Submits a patient-signed EIP-712 grant (a health code's payload); relayed to ``grantBySig``."""
        return self._json("POST", "/v1/consents", json=signed_grant)

    def revoke_consent(self, consent_id: str, signed_revoke: dict[str, Any]) -> dict[str, Any]:
        """Submits a patient-signed EIP-712 revoke of ``consent_id``."""
        return self._json("POST", f"/v1/consents/{consent_id}/revoke", json=signed_revoke)

    def emergency_access(self, signed_transaction: str, reason: str, salt: bytes) -> dict[str, Any]:
        """Break glass: relays the caller's own signed ``emergencyAccess`` transaction, whose ``reasonHash``
        is ``commitments.reason_commitment(reason, salt)``; the reason and salt stay off-chain."""
        body = {"signedTransaction": signed_transaction, "reason": reason, "salt": "0x" + salt.hex()}
        return self._json("POST", "/v1/emergency-access", json=body)

    def emergency_reasons(self) -> list[dict[str, Any]]:
        """The openings of the emergency reasons the gateway relayed, oldest first (auditors and regulators
        only): every page of them."""
        return list(self.iter_emergency_reasons())

    def iter_emergency_reasons(self, *, limit: int = PAGE_MAX) -> Iterator[dict[str, Any]]:
        """The openings of :meth:`emergency_reasons`, page after page."""
        path = "/v1/emergency-reasons"
        return _pages(lambda cursor: self._json("GET", path, params=_paged({}, cursor, limit)), "reasons")

    def review_draft(self, access_id: str, verdict: str, note: str) -> dict[str, Any]:
        """The ``EmergencyReview`` typed data the signed-in auditor would sign now (``message``, ``typedData``)."""
        return self._json(
            "POST", "/v1/emergency-reviews/draft", json={"accessId": access_id, "verdict": verdict, "note": note}
        )

    def submit_review(self, signed: dict[str, Any]) -> dict[str, Any]:
        """Submits a signed review (:func:`node_client.reviews.signed_review`); returns it as kept."""
        return self._json("POST", "/v1/emergency-reviews", json=signed)

    def emergency_reviews(self) -> list[dict[str, Any]]:
        """Every review the gateway keeps, oldest first (all pages; auditors and regulators only)."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 200}
        while True:
            page = self._json("GET", "/v1/emergency-reviews", params=params)
            out += page["reviews"]
            if not page.get("cursor"):
                return out[::-1]
            params["cursor"] = page["cursor"]

    def relay(self, signed_transaction: str) -> dict[str, Any]:
        """Relays the caller's own signed guardian or opt-out transaction (``POST /v1/transactions``)."""
        return self._json("POST", "/v1/transactions", json={"signedTransaction": signed_transaction})

    # ------------------------------------------------------------ what a patient sees; proofs; the journal

    def my_records(self) -> list[dict[str, Any]]:
        """The signed-in patient's records (category, provider, registered, status, tx), newest first (every page)."""
        return list(
            _pages(lambda cursor: self._json("GET", "/v1/me/records", params=_paged({}, cursor, PAGE_MAX)), "records")
        )

    def my_consents(self) -> dict[str, Any]:
        """The signed-in patient's consents (``consents``: current, one per institution; ``history``)."""
        return self._json("GET", "/v1/me/consents")

    def my_access_log(
        self, *, cursor: str | None = None, limit: int | None = None, since: int | None = None
    ) -> dict[str, Any]:
        """One page of who read the signed-in patient's records (``accesses``, newest first) and the emergency
        windows opened on them; ``cursor`` (the previous page's, None at the end) asks for the next page,
        ``since`` (Unix seconds: a previous answer's ``latest``) keeps only the entries of that second or later."""
        query = {"since": str(since)} if since is not None else {}
        return self._json("GET", "/v1/me/access-log", params=_paged(query, cursor, limit))

    def iter_access_log(self, *, limit: int | None = None, since: int | None = None) -> Iterator[dict[str, Any]]:
        """Every entry of the signed-in patient's access log (after ``since``), newest first, page after page."""
        return _pages(lambda cursor: self.my_access_log(cursor=cursor, limit=limit, since=since), "accesses")

    def proof(self, ref: str | int) -> dict[str, Any]:
        """The ledger proof of a release: journal index (batch; ``anchored`` false until anchored) or access id."""
        return self._json("GET", f"/v1/accesses/{ref}/proof")

    def download_journal(self, out: Path) -> int:
        """Streams the gateway's release journal (auditors and regulators only) to ``out``; returns its bytes."""
        out = Path(out)
        tmp = out.with_name(out.name + ".part")
        size = 0
        try:
            with self.http.stream("GET", "/v1/journal") as resp:
                if resp.status_code != 200:
                    resp.read()
                    self._raise(resp)
                with open(tmp, "wb") as f:
                    for chunk in resp.iter_bytes():
                        f.write(chunk)
                        size += len(chunk)
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc
        tmp.replace(out)
        return size

    # ------------------------------------------------------------ plumbing

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        resp = self.request(method, path, **kwargs)
        if resp.status_code >= 400:
            self._raise(resp)
        return self._body(resp)

    @staticmethod
    def _body(resp: httpx.Response) -> dict[str, Any]:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise GatewayProblem(resp.status_code, "invalid_response", "the gateway's answer is not a JSON object")
        return body

    def _unavailable(self, exc: httpx.TransportError) -> GatewayUnavailable:
        return GatewayUnavailable(f"{self.url} does not answer ({type(exc).__name__}: {exc})")

    @staticmethod
    def _raise(resp: httpx.Response) -> NoReturn:
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
