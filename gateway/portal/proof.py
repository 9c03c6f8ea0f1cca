"""The ledger-proof page in words: what each decoded event says, with names and labels, for a patient.

The page keeps the raw event arguments (in a <details>); this module turns them into labelled facts —
institutions by their name in the page's language, categories and purposes by their labels, times in
the display time zone — and a one-line verdict, so "purpose 0, emergency False" reads as a sentence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.portal.i18n import category_term
from gateway.storage import read_model
from gateway.wiring import Components
from node_client.vocabulary import PURPOSES

__all__ = ["facts", "verdict"]

ADDRESS_ARGS = ("requester", "patient", "grantee", "member", "signer", "guardian", "provider", "gateway")
TIME_ARGS = ("validFrom", "validUntil")


def _labels(mask: int, terms: tuple[Any, ...], lang: str) -> str:
    return _joined([_term(t, lang) for t in terms if mask >> t.bit & 1], lang)


def _joined(labels: list[str], lang: str) -> str:
    return ("、" if lang == "zh-CN" else ", ").join(labels)


def _term(term: Any, lang: str) -> str:
    return str(term.zh if lang == "zh-CN" else term.en)


def _record_category(c: Components, record_id: Any, lang: str) -> str | None:
    """The accessed record's category, from the read model (the event carries only the record id): its slot,
    named with the patient's key if this gateway holds it."""
    rec = read_model.record(c.db, bytes(record_id))
    return None if rec is None else _term(category_term(c.category_keys.name_slot(rec.patient, rec.category)), lang)


def facts(
    c: Components, args: dict[str, Any], lang: str, t: Callable[[str], str], dt: Callable[[Any], str]
) -> list[tuple[str, str]]:
    """One event's arguments as (label, plain value) pairs; hashes and ids stay in the technical part."""
    out: list[tuple[str, str]] = []
    for key in ADDRESS_ARGS:
        if isinstance(args.get(key), str):
            name = c.member_names.name(args[key], lang)
            out.append((t(f"arg_{key}"), f"{name} ({args[key]})" if name else args[key]))
    if "recordId" in args and (category := _record_category(c, args["recordId"], lang)):
        out.append((t("category"), category))
    if "categories" in args:  # the patient's slots (every event with categories names its patient)
        names = c.category_keys.name_slots(str(args.get("patient", "")), int(args["categories"]))
        out.append((t("categories"), _joined([_term(category_term(n), lang) for n in names], lang)))
    if "purpose" in args and int(args["purpose"]) < len(PURPOSES):
        out.append((t("purpose"), _term(PURPOSES[int(args["purpose"])], lang)))
    if "purposes" in args:
        out.append((t("purposes"), _labels(int(args["purposes"]), PURPOSES, lang)))
    if "emergency" in args:
        out.append((t("arg_emergency"), t("yes") if args["emergency"] else t("no")))
    for key in TIME_ARGS:
        if key in args:
            out.append((t(f"arg_{key}"), dt(int(args[key]))))
    return out


def verdict(receipt: Any, events: list[dict[str, Any]], t: Callable[[str], str]) -> tuple[bool, str]:
    """(verified, sentence): mined successfully with at least one event of this deployment's contracts."""
    ok = int(receipt.get("status", 0)) == 1 and bool(events)
    if not ok:
        return False, t("proof_not_verified")
    kind = "proof_verdict_access" if any(e["event"] == "AccessLogged" for e in events) else "proof_verdict_tx"
    return True, t(kind).format(block=receipt["blockNumber"])
