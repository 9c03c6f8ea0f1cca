"""The ledger's vocabulary: data categories, purposes of use and member roles.

This module is the single source of truth. ``contracts/libraries/Vocabulary.sol`` is generated from it
(``hcl dev gen-vocabulary``) and a test fails if the two drift apart. Bit numbers are part of the
on-chain format: never renumber, only append.

Categories and purposes are *bit numbers*; on-chain masks are ``1 << bit``. Roles are mask bits.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ALL_SLOTS",
    "AUDIT_ROLES",
    "CATEGORIES",
    "EMERGENCY_SAFE",
    "PURPOSES",
    "ROLES",
    "SLOT_COUNT",
    "Category",
    "Purpose",
    "Role",
    "Term",
    "categories_of",
    "category_mask",
    "parse_categories",
    "parse_purposes",
    "parse_roles",
    "purpose_mask",
    "purposes_of",
    "render_markdown",
    "render_solidity",
    "role_mask",
    "roles_of",
]


@dataclass(frozen=True, slots=True)
class Term:
    """One entry of the vocabulary: a stable bit, a CLI/API slug and plain-language descriptions."""

    bit: int
    slug: str
    en: str
    zh: str
    sensitive: bool = False
    emergency_safe: bool = False


class Category(enum.IntEnum):
    """Data categories a consent governs (bit numbers of a ``uint16`` mask)."""

    DEMOGRAPHICS = 0
    ALLERGIES = 1
    MEDICATIONS = 2
    CONDITIONS = 3
    LAB_RESULTS = 4
    IMAGING = 5
    ENCOUNTERS = 6
    IMMUNIZATIONS = 7
    VITAL_SIGNS = 8
    PROCEDURES = 9
    CARE_PLANS = 10
    GENOMICS = 11
    MENTAL_HEALTH = 12
    SEXUAL_REPRODUCTIVE_HEALTH = 13
    IDENTIFIERS = 14


class Purpose(enum.IntEnum):
    """Purposes of use (bit numbers of a ``uint8`` mask)."""

    TREATMENT = 0
    EMERGENCY = 1
    REFERRAL = 2
    CARE_COORDINATION = 3
    RESEARCH = 4
    PAYMENT = 5
    PUBLIC_HEALTH = 6


class Role(enum.IntFlag):
    """Member roles (bits of a ``uint16`` mask). EMERGENCY is a capability added to a provider role."""

    HOSPITAL = 0x01
    CLINIC = 0x02
    LAB = 0x04
    PHARMACY = 0x08
    GATEWAY = 0x10
    AUDITOR = 0x20
    REGULATOR = 0x40
    EMERGENCY = 0x80


CATEGORIES: tuple[Term, ...] = (
    Term(0, "demographics", "Demographics (age band, sex, contact preferences)", "基本信息"),
    Term(1, "allergies", "Allergies and intolerances", "过敏与不耐受", emergency_safe=True),
    Term(2, "medications", "Medications and prescriptions", "用药与处方", emergency_safe=True),
    Term(3, "conditions", "Diagnoses and conditions", "诊断与疾病", emergency_safe=True),
    Term(4, "lab-results", "Laboratory results", "检验结果"),
    Term(5, "imaging", "Imaging studies and reports", "影像检查与报告"),
    Term(6, "encounters", "Encounters and discharge summaries", "就诊记录与出院小结"),
    Term(7, "immunizations", "Immunizations", "疫苗接种", emergency_safe=True),
    Term(8, "vital-signs", "Vital signs and wearable data", "生命体征与可穿戴设备数据"),
    Term(9, "procedures", "Procedures and surgeries", "手术与操作"),
    Term(10, "care-plans", "Care plans and goals", "诊疗计划"),
    Term(11, "genomics", "Genomic and genetic data", "基因组与遗传数据", sensitive=True),
    Term(12, "mental-health", "Mental health", "精神心理健康", sensitive=True),
    Term(
        13,
        "sexual-reproductive-health",
        "Sexual and reproductive health",
        "性与生殖健康",
        sensitive=True,
    ),
    Term(
        14,
        "identifiers",
        "Identifiers (names, national IDs, MRNs, addresses, phone numbers)",
        "身份标识（姓名、证件号、病历号、地址、电话）",
        sensitive=True,
    ),
)

PURPOSES: tuple[Term, ...] = (
    Term(0, "treatment", "Treatment", "诊疗"),
    Term(1, "emergency", "Emergency care", "急救"),
    Term(2, "referral", "Referral and result recognition", "转诊与结果互认"),
    Term(3, "care-coordination", "Care coordination", "协同照护"),
    Term(4, "research", "Research", "科研"),
    Term(5, "payment", "Payment and insurance", "医保与支付"),
    Term(6, "public-health", "Public health", "公共卫生"),
)

ROLES: tuple[Term, ...] = (
    Term(0, "hospital", "Hospital", "医院"),
    Term(1, "clinic", "Community health centre / clinic", "社区卫生服务中心"),
    Term(2, "lab", "Laboratory", "检验机构"),
    Term(3, "pharmacy", "Pharmacy", "药店"),
    Term(4, "gateway", "Data gateway", "数据网关"),
    Term(5, "auditor", "Auditor", "审计方"),
    Term(6, "regulator", "Regulator", "监管方"),
    Term(7, "emergency", "Emergency capability", "急救资质"),
)

#: Roles that hold and receive patient data (consent grantees, record providers, requesters).
PROVIDER_ROLES = Role.HOSPITAL | Role.CLINIC | Role.LAB | Role.PHARMACY

#: Roles that oversee the network: they may read the ledger's evidence (proofs, journals, reports), not records.
AUDIT_ROLES = Role.AUDITOR | Role.REGULATOR

EMERGENCY_SAFE: int = sum(1 << t.bit for t in CATEGORIES if t.emergency_safe)
SENSITIVE: int = sum(1 << t.bit for t in CATEGORIES if t.sensitive)
ALL_CATEGORIES: int = (1 << len(CATEGORIES)) - 1
#: bits of the on-chain category mask: a *slot* is a category bit as the chain sees it (node_client.blinding)
SLOT_COUNT = 16
ALL_SLOTS: int = (1 << SLOT_COUNT) - 1
ALL_PURPOSES: int = (1 << len(PURPOSES)) - 1
ALL_ROLES: int = (1 << len(ROLES)) - 1

_BY_SLUG = {
    "category": {t.slug: t for t in CATEGORIES},
    "purpose": {t.slug: t for t in PURPOSES},
    "role": {t.slug: t for t in ROLES},
}


def _parse(kind: str, value: str | Iterable[str]) -> list[Term]:
    items = value.split(",") if isinstance(value, str) else list(value)
    table = _BY_SLUG[kind]
    terms = []
    for raw in items:
        slug = raw.strip().lower().replace("_", "-")
        if not slug:
            continue
        if slug not in table:
            raise ValueError(f"unknown {kind} {raw!r}; known: {', '.join(table)}")
        terms.append(table[slug])
    if not terms:
        raise ValueError(f"at least one {kind} is required")
    return terms


def parse_categories(value: str | Iterable[str]) -> int:
    """``"allergies,lab-results"`` → category mask. Raises ValueError naming unknown slugs."""
    return category_mask(Category(t.bit) for t in _parse("category", value))


def parse_purposes(value: str | Iterable[str]) -> int:
    """``"treatment,referral"`` → purpose mask."""
    return purpose_mask(Purpose(t.bit) for t in _parse("purpose", value))


def parse_roles(value: str | Iterable[str]) -> int:
    """``"hospital,emergency"`` → role mask."""
    return sum(1 << t.bit for t in _parse("role", value))


def category_mask(categories: Iterable[Category | int]) -> int:
    """Category bit numbers → ``uint16`` mask."""
    return _mask(categories, len(CATEGORIES))


def purpose_mask(purposes: Iterable[Purpose | int]) -> int:
    """Purpose bit numbers → ``uint8`` mask."""
    return _mask(purposes, len(PURPOSES))


def role_mask(roles: Iterable[Role]) -> int:
    """Roles → ``uint16`` mask."""
    mask = 0
    for role in roles:
        mask |= int(role)
    return mask


def _mask(bits: Iterable[int], count: int) -> int:
    mask = 0
    for bit in bits:
        if not 0 <= int(bit) < count:
            raise ValueError(f"bit {bit} outside the vocabulary (0..{count - 1})")
        mask |= 1 << int(bit)
    return mask


def categories_of(mask: int) -> list[Category]:
    """Category mask → categories, in bit order."""
    return [Category(t.bit) for t in CATEGORIES if mask >> t.bit & 1]


def purposes_of(mask: int) -> list[Purpose]:
    """Purpose mask → purposes, in bit order."""
    return [Purpose(t.bit) for t in PURPOSES if mask >> t.bit & 1]


def roles_of(mask: int) -> list[str]:
    """Role mask → role slugs, in bit order."""
    return [t.slug for t in ROLES if mask >> t.bit & 1]


def _const(name: str) -> str:
    return name.upper().replace("-", "_")


def render_solidity() -> str:
    """The text of ``contracts/libraries/Vocabulary.sol`` for this vocabulary."""
    safe_terms = [t for t in CATEGORIES if t.emergency_safe]
    cat_lines = "\n".join(f"    uint8 internal constant CAT_{_const(t.slug)} = {t.bit};" for t in safe_terms)
    pur_lines = "\n".join(f"    uint8 internal constant PURPOSE_{_const(t.slug)} = {t.bit};" for t in PURPOSES)
    role_lines = "\n".join(f"    uint16 internal constant ROLE_{_const(t.slug)} = 0x{1 << t.bit:04x};" for t in ROLES)
    safe = ", ".join(t.slug.replace("-", " ") for t in safe_terms)
    return f"""// SPDX-License-Identifier: Apache-2.0
// HealthCode Ledger (libraries/Vocabulary.sol)
// GENERATED by `hcl dev gen-vocabulary` from node_client/vocabulary.py - do not edit by hand.
pragma solidity ^0.8.24;

/**
 * @dev The stable vocabulary shared by the contracts and the Python client: category slots (bit
 * numbers in a `uint16` mask), purposes of use (bit numbers in a `uint8` mask) and member roles (bits of
 * a `uint16` mask). Bit numbers never change once deployed; new entries take new bits.
 *
 * On chain a category bit is a slot. The emergency-safe categories keep their own bit (named below);
 * every other category sits in a slot chosen per patient by her key (node_client/blinding.py,
 * docs/data-on-chain.md), so the contracts compare slots and never learn which category a slot holds.
 */
library Vocabulary {{
    // ---- category slots (bit numbers) ----
{cat_lines}
    uint8 internal constant SLOT_COUNT = {SLOT_COUNT};

    /// @dev Every slot bit.
    uint16 internal constant ALL_SLOTS = 0x{ALL_SLOTS:04x};
    /// @dev Categories an emergency (break-glass) access may read: {safe}.
    uint16 internal constant EMERGENCY_SAFE_CATEGORIES = 0x{EMERGENCY_SAFE:04x};

    // ---- purposes of use (bit numbers) ----
{pur_lines}
    uint8 internal constant PURPOSE_COUNT = {len(PURPOSES)};

    /// @dev Every defined purpose bit.
    uint8 internal constant ALL_PURPOSES = 0x{ALL_PURPOSES:02x};

    // ---- member roles (mask bits) ----
{role_lines}

    /// @dev Every defined role bit.
    uint16 internal constant ALL_ROLES = 0x{ALL_ROLES:04x};
    /// @dev Care-providing roles (hospital, clinic, lab, pharmacy): they hold records and may receive them under consent.
    uint16 internal constant PROVIDER_ROLES = 0x{int(PROVIDER_ROLES):04x};
}}
"""


def render_markdown() -> str:
    """The text of ``docs/vocabulary.md``: the vocabulary for people (and for wallet integrators)."""

    def table(terms: tuple[Term, ...], value: str) -> str:
        rows = [
            f"| {t.bit} | `{t.slug}` | {value.format(bit=t.bit, mask=1 << t.bit)} | {t.en} | {t.zh} |" for t in terms
        ]
        return "\n".join(["| bit | slug | mask | English | 中文 |", "|---|---|---|---|---|", *rows])

    cats = table(CATEGORIES, "`0x{mask:04x}`")
    notes = "\n".join(
        f"- `{t.slug}`: {'sensitive' if t.sensitive else 'emergency-safe'}"
        for t in CATEGORIES
        if t.sensitive or t.emergency_safe
    )
    return f"""# Vocabulary

Generated by `hcl dev gen-vocabulary` from `node_client/vocabulary.py` (the single source; the Solidity
library `contracts/libraries/Vocabulary.sol` is generated from it too). Bit numbers are part of the
on-chain format and never change.

## Data categories (`categories`: uint16 mask, `category`: bit number)

{cats}

On chain a category bit is a *slot* (0–15): the four emergency-safe categories keep their own bit for every
patient; every other category, and the spare slot 15, sits in the slot her category key gives it
(`node_client/blinding.py`, [data on chain](data-on-chain.md#blinded-categories)). The API, the portal and
the CLI speak the bits above and map them to her slots; a signed `ConsentGrant` carries the slots.

Emergency (break-glass) access may only read the emergency-safe categories; sensitive categories are
marked in the portal and never readable in an emergency.

{notes}

## Purposes of use (`purposes`: uint8 mask, `purpose`: bit number)

{table(PURPOSES, "`0x{mask:02x}`")}

## Member roles (`roles`: uint16 mask)

{table(ROLES, "`0x{mask:04x}`")}

Care-providing roles (hospital, clinic, lab, pharmacy) hold records and may receive them under consent.
`emergency` is a capability added to a care-providing role; `gateway` registers records and ledgers
accesses; `auditor` and `regulator` read the ledger.
"""
