"""Who is looking at a portal page: one sign-in token per role page, each in its own HttpOnly cookie.

The page script signs in exactly like any API client (EIP-4361 challenge → bearer token) and hands the
token to ``POST /portal/session`` *with its page* (patient, hospital or auditor), which stores it in that
page's ``HttpOnly; SameSite=Strict`` cookie. Each page and its helper routes read only their own cookie,
so on a shared desk a patient's tab never shows (or acts as) the clinic signed in on another tab. The
cookies are only ever read by the portal's own routes, never by the ``/v1`` API (which takes
``Authorization: Bearer`` only), and every portal POST also needs the ``X-HCL-Portal`` header, which a
cross-site form cannot send: no CSRF surface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastapi import Request, Response

from gateway.errors import DomainError
from gateway.problems import Problem
from gateway.storage import read_model
from gateway.wiring import Components
from node_client.contracts import MemberStatus
from node_client.vocabulary import AUDIT_ROLES, PROVIDER_ROLES

__all__ = [
    "ROLE_PAGES",
    "RolePage",
    "Viewer",
    "clear",
    "cookie_name",
    "require_portal_post",
    "require_viewer",
    "store",
    "viewer",
]

RolePage = Literal["patient", "hospital", "auditor"]
ROLE_PAGES: tuple[str, ...] = ("patient", "hospital", "auditor")
COOKIE_PATH = "/portal"
PORTAL_HEADER = "x-hcl-portal"


def cookie_name(page: str) -> str:
    """The session cookie of one role page (``hcl_session_patient``, ...)."""
    if page not in ROLE_PAGES:
        raise ValueError(f"not a role page: {page!r}")
    return f"hcl_session_{page}"


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
    """Roles of an *active* member (0 for non-members and suspended): the read model's, the chain's while
    the read model is catching up (it may not have read the member yet)."""
    m = c.policy.member(address) if c.indexer.catching_up else read_model.member(c.db, address)
    return m.roles if m is not None and m.status is MemberStatus.ACTIVE else 0


def viewer(request: Request, c: Components, page: str) -> Viewer | None:
    """Who ``page`` acts as, or ``None`` when that page is not signed in (or its token has expired)."""
    token = request.cookies.get(cookie_name(page))
    if not token:
        return None
    try:
        address = c.auth.verify(token)
    except DomainError:  # malformed, forged or expired: not signed in
        return None
    return Viewer(address, active_roles(c, address))


def require_viewer(request: Request, c: Components, page: str) -> Viewer:
    v = viewer(request, c, page)
    if v is None:  # a Problem, not a domain error: this judges the HTTP request's cookie, as api/deps.py its header
        raise Problem("unauthenticated", f"sign in on the portal's {page} page first (your session may have expired)")
    return v


def require_portal_post(request: Request) -> None:
    """Refuses a POST that did not come from the portal's own script (cross-site forms cannot set it)."""
    if request.headers.get(PORTAL_HEADER) != "1":  # a Problem: an HTTP-edge check of the request's headers
        raise Problem("invalid_request", "portal requests carry the X-HCL-Portal: 1 header")


def store(response: Response, request: Request, page: str, token: str, max_age: int) -> None:
    response.set_cookie(
        cookie_name(page),
        token,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
    )


def clear(response: Response, page: str) -> None:
    response.delete_cookie(cookie_name(page), path=COOKIE_PATH, httponly=True, samesite="strict")
