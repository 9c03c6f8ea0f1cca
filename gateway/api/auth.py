"""Sign-in: challenge → signed challenge → bearer token."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api.deps import ComponentsDep
from gateway.api.models import ChallengeIn, TokenIn
from gateway.api.schemas import ChallengeOut, TokenOut, problems

router = APIRouter(prefix="/v1/auth", tags=["auth"])


@router.post("/challenge", responses=problems(503))
def challenge(body: ChallengeIn, c: ComponentsDep) -> ChallengeOut:
    """An EIP-4361 message to sign with the caller's key (EIP-191 personal_sign); single use, 5 min."""
    ch = c.auth.challenge(body.address)
    return ChallengeOut(message=ch.message, nonce=ch.nonce, expiresAt=ch.expires_at)


@router.post("/token", responses=problems(401, 503))
def token(body: TokenIn, c: ComponentsDep) -> TokenOut:
    """Exchanges a signed challenge for a bearer token (≤ 15 min) bound to the signing address."""
    t = c.auth.sign_in(body.message, body.signature)
    return TokenOut(token=t.token, address=t.address, expiresAt=t.expires_at)
