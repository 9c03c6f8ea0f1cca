"""What is wrong with an upload: every problem found, each at a FHIRPath-like location."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from gateway import errors

__all__ = ["MAX_ISSUES", "FhirIssue", "InvalidFhir"]

#: At most this many issues are reported; the last one then says how many more there were. A hostile
#: or badly broken upload must not turn into a multi-megabyte error response.
MAX_ISSUES: Final = 100


@dataclass(frozen=True, slots=True)
class FhirIssue:
    """One problem in an upload.

    ``path`` is FHIRPath-like (``Bundle.entry[3].resource.status``) so that the sender can find it in
    its own data; ``$`` is the document itself (e.g. when it is not JSON at all).
    """

    path: str
    message: str


class InvalidFhir(errors.InvalidFhir):
    """The upload is not acceptable FHIR; ``issues`` lists every problem found (capped, see below).

    All issues are collected rather than only the first, so that a sender can fix a 300-resource bundle
    in one round trip. The list is capped at :data:`MAX_ISSUES` entries, the last of which then says how
    many more were found. Uncaught, it is answered as ``invalid_fhir`` with every issue (``issues``).
    """

    def __init__(self, issues: Iterable[FhirIssue]) -> None:
        self.issues: list[FhirIssue] = _cap(list(issues))
        count = len(self.issues)
        super().__init__(f"{count} issue(s)", issues=[{"path": i.path, "message": i.message} for i in self.issues])

    def __str__(self) -> str:
        first = self.issues[0] if self.issues else FhirIssue("$", "invalid")
        return f"{len(self.issues)} FHIR issue(s); first: {first.path}: {first.message}"


def _cap(issues: list[FhirIssue]) -> list[FhirIssue]:
    if len(issues) <= MAX_ISSUES:
        return issues
    more = len(issues) - (MAX_ISSUES - 1)
    return [*issues[: MAX_ISSUES - 1], FhirIssue("$", f"… and {more} more issue(s)")]
