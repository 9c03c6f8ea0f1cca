"""Find a patient by an identifier (a national ID, an MRN, a phone number) without putting it anywhere public.

The gateway keeps a keyed index from identifier to patient (:mod:`gateway.storage.identifier_index`). A
lookup *is a release* of the patient's ``identifiers`` record to the caller (:func:`gateway.services.releases.release`):
the same consent check on-chain (a current consent for ``identifiers`` for that purpose), the same ledgering
(journal entry or ``AccessLogged``, so the patient's access log shows it as a read of her identifiers by that
institution), and the answer carries that release, sealed to the caller — who can then check the name and
birth date against the card in front of them.

Unknown identifier and "not allowed" get the same 404 ``patient_not_found``, and the unknown path makes the same
kind of consent check (against no patient) so that the two cost about the same. Emergency lookups are not
possible: ``identifiers`` is not an emergency-safe category, so an emergency window never covers it and the
release path refuses it like any other missing consent (see docs/security.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway import errors
from gateway.fhir.identity import normalised_identifier
from gateway.services import releases
from gateway.storage import identifier_index
from gateway.wiring import Components
from node_client.vocabulary import Category

__all__ = ["Found", "lookup"]

log = logging.getLogger("hcl.gateway.lookup")

#: the one answer for an identifier nobody holds and for one the caller may not look up
_NOT_FOUND = "no patient you may look up has this identifier here"
#: the placeholder patient an unknown identifier's consent check is made against (no one consents from it)
_NOBODY = "0x000000000000000000000000000000000000dEaD"


@dataclass(frozen=True, slots=True)
class Found:
    patient: str
    record_id: bytes
    release: releases.Release


def lookup(c: Components, *, caller: str, system: str, value: str, purpose: int) -> Found:
    """The patient whose identifier ``system|value`` is, if ``caller`` may read her identifiers for
    ``purpose`` now; the read is ledgered. Else :class:`~gateway.errors.PatientNotFound`. The consent is checked
    by the release, for the slot her identifiers record is registered in (her key placed it there)."""
    c.policy.require_member(caller)
    key = identifier_index.digest(c.index_key, normalised_identifier(system, value))
    candidates = identifier_index.records_of(c.db, key)
    if not candidates:
        # as costly as a refusal (nobody has a category key: the bit is only a slot like any other)
        c.policy.check(_NOBODY, caller, int(Category.IDENTIFIERS), purpose)
        raise errors.PatientNotFound(_NOT_FOUND)
    for patient, record_id in candidates:  # one, unless two patients share an identifier
        try:
            released = releases.release(c, caller=caller, record_id=record_id, purpose=purpose)
        except (errors.ConsentRefused, errors.RecordNotFound, errors.RecordRetracted):
            continue
        log.info("patient looked up", extra={"requester": caller, "record": record_id.hex()})
        return Found(patient, record_id, released)
    raise errors.PatientNotFound(_NOT_FOUND)
