"""FastAPI dependencies: the components of this app, and who is calling."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Query, Request

from gateway.problems import Problem
from gateway.wiring import Components
from node_client.paging import PageKey, decode_cursor, encode_cursor

__all__ = [
    "PAGE_LIMIT_MAX",
    "CallerDep",
    "ComponentsDep",
    "CursorQuery",
    "LimitQuery",
    "PeerLimitQuery",
    "SinceQuery",
    "complete_read_model",
    "page_key",
    "page_links",
    "read_body",
]

#: the largest page of any list (a page costs one index range per source, whatever the history)
PAGE_LIMIT_MAX = 200
CursorQuery = Annotated[
    str | None, Query(max_length=128, description="the `cursor` of the previous page (absent: the newest entries)")
]
SinceQuery = Annotated[
    int | None,
    Query(
        ge=0,
        lt=1 << 40,
        description="Unix seconds: only the entries of that second or later (a poller sends the `latest` it was "
        "given and drops the accessIds it has seen: that second's entries come again)",
    ),
]
LimitQuery = Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX, description="entries per page")]
#: what a gateway asks a peer for: one more than its page, to know whether another page follows
PeerLimitQuery = Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX + 1, description="entries per page")]


def page_key(cursor: str | None) -> PageKey | None:
    """A page cursor as its key, (time, 32-byte id); a cursor this gateway did not make is a 400."""
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor)
    except ValueError:
        raise Problem("invalid_request", "cursor is not one this gateway returned") from None


def page_links(path: str, query: dict[str, str | int], following: PageKey | None) -> dict[str, str | None]:
    """A page's ``cursor`` and ``next`` (the same ``query`` from the cursor on), both ``None`` on the last."""
    if following is None:
        return {"cursor": None, "next": None}
    cursor = encode_cursor(*following)
    return {"cursor": cursor, "next": f"{path}?{urlencode({**query, 'cursor': cursor})}"}


async def get_components(request: Request) -> Components:
    components: Components = request.app.state.components  # set by create_app
    return components


ComponentsDep = Annotated[Components, Depends(get_components)]


async def get_caller(request: Request, c: ComponentsDep) -> str:
    """The address bound to the bearer token (membership is checked by each route, on-chain)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Problem("unauthenticated", "send Authorization: Bearer <token> (POST /v1/auth/challenge first)")
    return c.auth.verify(token.strip())


CallerDep = Annotated[str, Depends(get_caller)]


async def complete_read_model(c: ComponentsDep) -> None:
    """For routes answered from the read model alone: 503 ``catching_up`` until it has reached the head
    once (a fresh start reads the chain's history in the background)."""
    c.indexer.require_complete()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it exceeds ``limit`` bytes — without buffering more."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise Problem("payload_too_large", f"the limit is {limit} bytes", limit=limit)
        except ValueError:
            raise Problem("invalid_request", "bad Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem("payload_too_large", f"the limit is {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)
