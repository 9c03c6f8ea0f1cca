"""Minimum necessary: a Patient resource split into what ``demographics`` and ``identifiers`` may release.

A clinic granted ``demographics`` needs the patient's sex, age and language, not the national ID: the
vocabulary promises "age band, sex, contact preferences". So an uploaded Patient is never stored whole:

* :func:`minimal_patient` (the ``demographics`` record, and the Patient copied into every other record for
  its ``subject`` references): ``gender``, ``birthDate`` cut to the year, ``communication`` (language and
  whether it is preferred: FHIR's contact preference). Nothing that names or locates the patient.
* :func:`identifying_patient` (the ``identifiers`` record, a sensitive category that needs explicit consent):
  ``identifier`` (national ID, MRN, licence ...), ``name``, ``telecom``, ``address``, ``photo``, ``contact``.

Both keep the resource's ``id`` and the entry's ``fullUrl``, so the two parts are the same patient. The rest
(extensions such as race or birthplace, ``maritalStatus``, ``deceased[x]``, ``generalPractitioner``, the
narrative that restates the name, ``meta`` profile claims the parts no longer meet) is not stored: it is
reported back as ignored (:func:`unstored_elements`), never dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["IDENTIFYING_ELEMENTS", "identifying_patient", "minimal_patient", "unstored_elements"]

#: the Patient elements that identify the patient, released only under the ``identifiers`` category
IDENTIFYING_ELEMENTS: Final = ("identifier", "name", "telecom", "address", "photo", "contact")
#: the Patient elements of the ``demographics`` category (birthDate cut to the year)
_MINIMAL_ELEMENTS: Final = ("gender", "birthDate", "communication")
_ALWAYS: Final = ("resourceType", "id")


def minimal_patient(patient: Mapping[str, Any]) -> dict[str, Any]:
    """The Patient as ``demographics`` releases it: sex, birth year, languages."""
    out = {k: patient[k] for k in _ALWAYS if k in patient}
    if "gender" in patient:
        out["gender"] = patient["gender"]
    if isinstance(patient.get("birthDate"), str):
        out["birthDate"] = patient["birthDate"][:4]
    languages = [
        {k: c[k] for k in ("language", "preferred") if k in c}
        for c in patient.get("communication") or ()
        if isinstance(c, dict) and "language" in c
    ]
    if languages:
        out["communication"] = languages
    return out


def identifying_patient(patient: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Patient as ``identifiers`` releases it, or None when it has nothing identifying."""
    found = {k: patient[k] for k in IDENTIFYING_ELEMENTS if k in patient}
    return {**{k: patient[k] for k in _ALWAYS if k in patient}, **found} if found else None


def unstored_elements(patient: Mapping[str, Any]) -> str | None:
    """Why part of a Patient is not stored (for the upload's ``ignored`` list), or None if all of it is."""
    rest = sorted(k for k in patient if k not in (*_ALWAYS, *_MINIMAL_ELEMENTS, *IDENTIFYING_ELEMENTS))
    if not rest:
        return None
    return (
        f"not stored: {', '.join(rest)} (minimum necessary: demographics keep sex, birth year and languages,"
        " identifiers the names, identifiers, contact points and addresses)"
    )
