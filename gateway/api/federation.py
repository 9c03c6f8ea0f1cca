"""/v1/federation: what one institution's gateway answers another's, acting for one of its members.

No bearer token here: each request is signed by the asking gateway's member key (see
:mod:`gateway.access.peers`), names the member it acts for, and is answered for that member exactly as
if it had asked itself — the same consent checks, the access ledgered here, the record sealed to the
member's key. Only records this gateway holds are answered: nothing is forwarded on from here.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from gateway.api.deps import ComponentsDep, CursorQuery, PeerLimitQuery, page_key, page_links
from gateway.api.models import PinsIn
from gateway.api.records import discovered, discovery_query, parse_purpose, parse_record_id
from gateway.api.schemas import DiscoveredRecords, HolderAccesses, Pins, Release, problems
from gateway.errors import DomainError, RecordNotFound
from gateway.federation import replication
from gateway.problems import Problem
from gateway.services import access_history, discovery, releases
from node_client.federation import SignedRequest
from node_client.vocabulary import PURPOSES

router = APIRouter(tags=["federation"])


async def get_peer_request(request: Request, c: ComponentsDep) -> SignedRequest:
    """The verified gateway request (401 if the signature, clock or nonce fail; 403 if not a gateway)."""
    body = await request.body()
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return await run_in_threadpool(c.peers.verify, request.method, target, body, request.headers)


PeerDep = Annotated[SignedRequest, Depends(get_peer_request)]


@router.get("/v1/federation/patients/{address}/records", responses=problems(401, 403, 409, 503))
def holder_discover(
    address: str,
    c: ComponentsDep,
    peer: PeerDep,
    category: Annotated[str | None, Query()] = None,
    since: Annotated[str | None, Query()] = None,
    code: Annotated[str | None, Query()] = None,
    purpose: Annotated[str, Query()] = "treatment",
    cursor: CursorQuery = None,
    limit: PeerLimitQuery | None = None,
) -> DiscoveredRecords:
    """The records this gateway holds of a patient that the member acted for may see now: all of them, or
    with ``limit`` a page, newest first by (registeredAt, recordId), after ``cursor``."""
    before = page_key(cursor)
    c.policy.require_member(peer.acting_for)
    c.metrics.peer_requests.labels(kind="discover").inc()
    query = discovery_query(c, address, purpose=purpose, category=category, since=since, code=code)
    found = discovery.local(c, caller=peer.acting_for, query=query, before=before, limit=limit)
    again: dict[str, str | int] = {**query.filters, "purpose": PURPOSES[query.purpose].slug, "limit": limit or 0}
    return discovered(
        c, found, query, page_links(f"/v1/federation/patients/{query.patient}/records", again, found.next)
    )


@router.get("/v1/federation/patients/{address}/accesses", responses=problems(401, 403, 503))
def holder_accesses(
    address: str, c: ComponentsDep, peer: PeerDep, cursor: CursorQuery = None, limit: PeerLimitQuery | None = None
) -> HolderAccesses:
    """This gateway's journal entries of a patient, with their proofs, for the patient's own gateway: only
    when the gateway acts for that patient (a history is the patient's to see). All of them, or with
    ``limit`` a page, newest first, after ``cursor``."""
    before = page_key(cursor)
    if not is_address(address) or to_checksum_address(address) != peer.acting_for:
        raise Problem("not_patient", "a patient's access history is answered only to the patient's gateway for them")
    c.metrics.peer_requests.labels(kind="history").inc()
    return HolderAccesses.model_validate(
        {
            "patient": peer.acting_for,
            "entries": access_history.holder_entries(c, peer.acting_for, before=before, limit=limit),
        }
    )


@router.get("/v1/federation/records/{record_id}", response_model=Release, responses=problems(401, 403, 404, 410, 503))
async def holder_release(
    record_id: str,
    c: ComponentsDep,
    peer: PeerDep,
    purpose: Annotated[str, Query()],
) -> Response:
    """A record this gateway holds, released to the member acted for: ledgered here, sealed to that member."""
    rid, pur = parse_record_id(record_id), parse_purpose(purpose)
    c.metrics.peer_requests.labels(kind="release").inc()
    try:
        released = await releases.release_async(c, caller=peer.acting_for, record_id=rid, purpose=pur)
    except (Problem, DomainError) as exc:
        c.metrics.denials.labels(reason=exc.code).inc()
        raise
    return Response(orjson.dumps(released.body), media_type="application/json")


@router.post("/v1/federation/pins", responses=problems(401, 403, 404, 410, 502, 503))
async def holder_pins(body: PinsIn, c: ComponentsDep, peer: PeerDep) -> Pins:
    """Pins the ciphertexts of records the asking gateway registered on this gateway's IPFS node (fetched
    through the swarm, re-hashed against the chain): its replicas. 403 for another gateway's record."""
    rids = [parse_record_id(r) for r in body.recordIds]
    c.metrics.peer_requests.labels(kind="pin").inc()
    timeout = c.settings.federation_timeout / 2  # answer before the asking gateway gives up

    def pin() -> None:
        try:
            replication.accept_pins(c.db, c.store, peer.gateway, rids, timeout=timeout)
        except RecordNotFound:
            c.indexer.require_complete()  # not read yet is not "not registered" (the asker retries a 503)
            c.catch_up()  # registered a moment ago: this gateway's read model may be a block behind
            replication.accept_pins(c.db, c.store, peer.gateway, rids, timeout=timeout)

    await run_in_threadpool(pin)
    c.metrics.replicas_pinned.inc(len(rids))
    return Pins(pinned=["0x" + r.hex() for r in rids])
