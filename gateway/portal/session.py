"""Who is looking at a portal page: the sign-in token, kept in an HttpOnly cookie.

The page script signs in exactly like any API client (EIP-4361 challenge → bearer token) and hands the
token to ``POST /portal/session``, which stores it in an ``HttpOnly; SameSite=Strict`` cookie so that
server-rendered pages can show the caller's data. The cookie is only ever read by the portal's own
routes, never by the ``/v1`` API (which takes ``Authorization: Bearer`` only), and every portal POST
also needs the ``X-HCL-Portal`` header, which a cross-site form cannot send: no CSRF surface.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request, Response

from node_client.vocabulary import PROVIDER_ROLES, Role

from gateway.problems import Problem
from gateway.state import Components

__all__ = ["COOKIE", "Viewer", "clear", "require_portal_post", "store", "viewer"]

COOKIE = "hcl_session"
PORTAL_HEADER = "x-hcl-portal"

AUDIT_ROLES = int(Role.AUDITOR | Role.REGULATOR)


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in address and its active roles in the consortium (0: a patient, not a member)."""

    address: str
    roles: int

    @property
    def is_provider(self) -> bool:
        return bool(self.roles & int(PROVIDER_ROLES))

    @property
    def is_auditor(self) -> bool:
        return bool(self.roles & AUDIT_ROLES)

    @property
    def home(self) -> str:
        if self.is_auditor:
            return "/portal/auditor"
        return "/portal/hospital" if self.is_provider else "/portal/patient"


def active_roles(c: Components, address: str) -> int:
    """Roles of an *active* member, from the indexer's read model (0 for non-members and suspended)."""
    row = c.db.read().execute("SELECT status, roles FROM chain_members WHERE address = ?", (address,)).fetchone()
    return int(row["roles"]) if row is not None and row["status"] == 1 else 0


def viewer(request: Request, c: Components) -> Viewer | None:
    """The viewer of this request, or ``None`` when not signed in (or the token has expired)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        address = c.auth.verify(token)
    except Problem:
        return None
    return Viewer(address, active_roles(c, address))


def require_viewer(request: Request, c: Components) -> Viewer:
    v = viewer(request, c)
    if v is None:
        raise Problem("unauthenticated", "sign in on the portal page first (your session may have expired)")
    return v


def require_portal_post(request: Request) -> None:
    """Refuses a POST that did not come from the portal's own script (cross-site forms cannot set it)."""
    if request.headers.get(PORTAL_HEADER) != "1":
        raise Problem("invalid_request", "portal requests carry the X-HCL-Portal: 1 header")


def store(response: Response, request: Request, token: str, max_age: int) -> None:
    response.set_cookie(
        COOKIE, token, max_age=max_age, httponly=True, samesite="strict", path="/",
        secure=request.url.scheme == "https",
    )


def clear(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/")
