"""Which resource a resource *is*, across uploads: the key of idempotent uploads and of record versions.

A resource's identity is its type with its first business ``identifier`` (``system|value``) when it has
one — a hospital's own id for the thing, stable across exports — else its type with its ``id``, else its
type with the entry's ``fullUrl`` (a ``urn:uuid:`` the sender chose, or the one :func:`~gateway.fhir.records.group`
derives from the resource's place in the upload). The gateway never stores an identity in the clear: it
keys it (:mod:`gateway.storage.versions`), since a Patient's identity is its national ID or MRN.

A transaction or batch entry may ask for a conditional create (``request.ifNoneExist``); this gateway
understands ``identifier=system|value`` (the one search every server supports the same way) and refuses
any other search rather than creating what the sender meant to be unique.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from gateway.fhir.issues import FhirIssue, InvalidFhir

__all__ = ["conditional_creates", "identity", "lookup_keys", "normalised_identifier"]


def identity(resource: Mapping[str, Any], full_url: str) -> str:
    """The resource's identity (see the module docstring)."""
    rt = resource.get("resourceType")
    idents = resource.get("identifier")
    for ident in [idents] if isinstance(idents, dict) else idents if isinstance(idents, list) else ():
        if isinstance(ident, dict) and isinstance(ident.get("system"), str) and isinstance(ident.get("value"), str):
            return identifier_identity(str(rt), ident["system"], ident["value"])
    rid = resource.get("id")
    return f"{rt}/{rid}" if isinstance(rid, str) and rid else f"{rt}@{full_url}"


def identifier_identity(resource_type: str, system: str, value: str) -> str:
    """The identity of a ``resource_type`` whose first identifier is ``system|value``."""
    return f"{resource_type}|identifier|{system}|{value}"


def conditional_creates(resource: Mapping[str, Any]) -> dict[int, str]:
    """The identities a transaction or batch Bundle's conditional creates ask about, by entry index
    (``ifNoneExist`` other than one ``identifier=system|value``: :class:`InvalidFhir`)."""
    if resource.get("resourceType") != "Bundle" or resource.get("type") not in ("transaction", "batch"):
        return {}
    out: dict[int, str] = {}
    refused: list[FhirIssue] = []
    for i, entry in enumerate(resource.get("entry") or ()):
        request = entry.get("request") if isinstance(entry, dict) else None
        query = request.get("ifNoneExist") if isinstance(request, dict) else None
        res = entry.get("resource") if query is not None else None
        if query is None or not isinstance(res, dict):
            continue
        params = parse_qsl(str(query).split("?", 1)[-1], keep_blank_values=True)
        if len(params) != 1 or params[0][0] != "identifier" or params[0][1].count("|") != 1:
            refused.append(
                FhirIssue(
                    f"Bundle.entry[{i}].request.ifNoneExist",
                    "only a conditional create on one identifier (identifier=system|value) is supported",
                )
            )
            continue
        system, value = params[0][1].split("|")
        out[i] = identifier_identity(str(res.get("resourceType")), system, value)
    if refused:
        raise InvalidFhir(refused)
    return out


def normalised_identifier(system: str, value: str) -> str:
    """``system|value`` as the identifier lookup keys it: both trimmed; a phone number (system ``phone``)
    reduced to its digits and a leading ``+``, so ``+86 138-0013-8000`` and ``+8613800138000`` agree."""
    system, value = system.strip(), value.strip()
    if system == "phone":
        value = ("+" if value.startswith("+") else "") + "".join(ch for ch in value if ch.isdigit())
    return f"{system}|{value}"


def lookup_keys(patient: Mapping[str, Any]) -> list[str]:
    """What a patient can be looked up by (:func:`normalised_identifier`): each ``identifier``'s
    ``system|value``, and each phone number as ``phone|digits``."""
    out = []
    for ident in patient.get("identifier") or ():
        if isinstance(ident, dict) and isinstance(ident.get("system"), str) and isinstance(ident.get("value"), str):
            out.append(normalised_identifier(ident["system"], ident["value"]))
    for tel in patient.get("telecom") or ():
        if isinstance(tel, dict) and tel.get("system") == "phone" and isinstance(tel.get("value"), str):
            out.append(normalised_identifier("phone", tel["value"]))
    return sorted(set(out))
