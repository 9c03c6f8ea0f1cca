"""The health code (健康码): a patient-signed consent message carried in a QR code.

A health code is a signed EIP-712 ``ConsentGrant`` (or ``ConsentRevoke``) from :mod:`node_client.signing`,
packed into a small binary payload, text-encoded with base45 (RFC 9285) and prefixed with ``HCL:``.
base45's 45-character alphabet is exactly QR's alphanumeric set, so a QR encoder stores 5.5 bits per
character; a typical grant is 165 bytes → 252 characters → QR version 9 at error correction M, and
with the patient's category key 230 bytes → 345 characters → QR version 11 (a guardian's, who names herself:
250 bytes → 375 characters → version 12).

The prefix is ``HCL:``, not the EU Digital COVID Certificate's ``HC1:``: a DCC reader must not mistake
a consent for a vaccination certificate (and vice versa).

Binary layout, version 2 (big-endian, no padding)::

    off  size  field
      0     1  version                       = 2 (1 is read too: the same layout, never the 0x40 bit)
      1     1  kind                          0x01 grant, 0x02 revoke; | 0x80 when a signer other than
                                             the patient (a guardian) follows the fields; | 0x40 when
                                             the patient's category-key signature follows (grants:
                                             hers, or a guardian's who was handed it)
      2     8  chainId                       u64
     10    20  verifyingContract             the ConsentRegistry
     30    20  patient
     50    20  grantee
    grant only:
     70     2  categories                    u16 mask
     72     1  purposes                      u8 mask
     73     5  validFrom                     u40 unix seconds
     78     5  validUntil                    u40 unix seconds
    both:
            8  nonce                         u64
            5  deadline                      u40 unix seconds (EIP-712 uint256; larger values refused)
          [20] signer                        only with kind | 0x80; otherwise the patient signed
           65  signature                     r ‖ s ‖ v
          [65] category-key signature        only with kind | 0x40: the patient's CategoryKeyRequest
                                             signature (:mod:`node_client.blinding`), so that the
                                             grantee's gateway learns which slot holds which category
            4  checksum                      first 4 bytes of SHA-256 over everything before it

The domain's ``name`` and ``version`` are not carried: payload versions 1 and 2 mean ``"HealthCode Ledger"``,
``"1"``. Only 65-byte (ECDSA) signatures fit; an ERC-1271 contract wallet's longer signature is refused
at encoding.

Why a checksum when the EIP-712 signature already covers the fields: it tells *transport damage* (a
pasted code cut short, a mistyped character) apart from *tampering*, so a damaged code is rejected as
unreadable instead of being shown as "signature invalid" — and the signer, signature and domain are
not under the signature at all. It is not a security measure (anyone can recompute it); the signature
is. Truncated SHA-256 rather than CRC32: both are 32 bits and both catch accidental damage with
probability 1 - 2⁻³² (CRC32's burst-error guarantees add nothing here, QR already has Reed-Solomon),
but SHA-256 is available everywhere the code is read — ``hashlib`` and, for the portal, ethers'
``sha256`` — with no hand-written CRC table.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import base45
from eth_utils import to_checksum_address

from node_client import blinding
from node_client._exceptions import NodeClientError, SignatureError
from node_client.signing import (
    DOMAIN_NAME,
    DOMAIN_VERSION,
    ConsentGrant,
    ConsentRevoke,
    Domain,
    SignedMessage,
    verify,
)
from node_client.vocabulary import CATEGORIES, PURPOSES, SLOT_COUNT

if TYPE_CHECKING:
    import segno

    from node_client.deploy import Ledger

__all__ = [
    "MAX_QR_VERSION",
    "PREFIX",
    "VERSION",
    "HealthCode",
    "HealthCodeError",
    "HealthCodeSummary",
    "TermView",
    "decode",
    "encode",
    "qr",
    "read_image",
    "render_png",
    "render_svg",
    "summary",
]

PREFIX = "HCL:"
VERSION = 2
_READABLE_VERSIONS = (1, 2)
MAX_QR_VERSION = 15
QR_ERROR = "m"

_GRANT = 0x01
_REVOKE = 0x02
_EXPLICIT_SIGNER = 0x80
_CATEGORY_KEY = 0x40

_HEAD = struct.Struct(">BBQ20s20s20s")  # version, kind, chainId, contract, patient, grantee
_GRANT_FIELDS = struct.Struct(">HB5s5s")  # categories, purposes, validFrom, validUntil
_TAIL_FIELDS = struct.Struct(">Q5s")  # nonce, deadline
_SIG_LEN = 65
_CHECK_LEN = 4
_U40 = 1 << 40


class HealthCodeError(NodeClientError):
    """A health code cannot be built or read: wrong prefix, unknown version, bad checksum or length.

    ``kind`` names the fault in a stable word (``checksum``, ``no_code_in_picture``, ...) so that a page
    can say it in its own language; the message is the English one for logs and the CLI.
    """

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


# ---------------------------------------------------------------- codec


def _u40(value: int, what: str) -> bytes:
    if not 0 <= value < _U40:
        raise HealthCodeError(f"{what} {value} does not fit 40 bits")
    return value.to_bytes(5, "big")


def _addr(value: str) -> bytes:
    return bytes.fromhex(to_checksum_address(value)[2:])


def _checksum(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()[:_CHECK_LEN]


@dataclass(frozen=True, slots=True)
class HealthCode:
    """A decoded health code: the signed message, its domain and the category-key signature it may carry."""

    signed: SignedMessage
    domain: Domain
    #: the patient's CategoryKeyRequest signature (checked at decoding to be hers), or None
    category_key: bytes | None = None

    def key(self) -> blinding.CategoryKey | None:
        """The patient's category key the code carries (None when it carries none)."""
        if self.category_key is None:
            return None
        return blinding.category_key(self.domain, self.signed.message.patient, self.category_key)


def encode(signed: SignedMessage, domain: Domain, category_key: bytes | None = None) -> str:
    """Packs a signed grant or revoke and its domain into health-code text (``HCL:...``).

    ``category_key``, the patient's :func:`node_client.blinding.sign_category_key` signature, goes into a
    grant (hers, or her guardian's who was handed it by a gateway; a revocation needs none).
    """
    msg = signed.message
    if (domain.name, domain.version) != (DOMAIN_NAME, DOMAIN_VERSION):
        raise HealthCodeError(f"domain {domain.name!r} v{domain.version} is not {DOMAIN_NAME!r} v{DOMAIN_VERSION}")
    if not 0 <= domain.chain_id < 1 << 64:
        raise HealthCodeError(f"chain id {domain.chain_id} does not fit 64 bits")
    if len(signed.signature) != _SIG_LEN:
        raise HealthCodeError(
            f"signature is {len(signed.signature)} bytes; a health code carries a 65-byte ECDSA signature"
        )
    if not 0 <= msg.nonce < 1 << 64:
        raise HealthCodeError(f"nonce {msg.nonce} does not fit 64 bits")
    explicit = to_checksum_address(signed.signer) != to_checksum_address(msg.patient)
    if isinstance(msg, ConsentGrant):
        kind = _GRANT
        if not (0 <= msg.categories < 1 << 16 and 0 <= msg.purposes < 1 << 8):
            raise HealthCodeError("categories must fit 16 bits and purposes 8 bits")
        fields = _GRANT_FIELDS.pack(
            msg.categories, msg.purposes, _u40(msg.valid_from, "validFrom"), _u40(msg.valid_until, "validUntil")
        )
    elif isinstance(msg, ConsentRevoke):
        kind, fields = _REVOKE, b""
    else:  # pragma: no cover - typing guards this
        raise HealthCodeError(f"cannot encode {type(msg).__name__}")
    if category_key is not None:
        _check_category_key(domain, signed, category_key)
        kind |= _CATEGORY_KEY
    body = b"".join(
        (
            _HEAD.pack(
                VERSION,
                kind | (_EXPLICIT_SIGNER if explicit else 0),
                domain.chain_id,
                _addr(domain.verifying_contract),
                _addr(msg.patient),
                _addr(msg.grantee),
            ),
            fields,
            _TAIL_FIELDS.pack(msg.nonce, _u40(msg.deadline, "deadline")),
            _addr(signed.signer) if explicit else b"",
            bytes(signed.signature),
            bytes(category_key or b""),
        )
    )
    body += _checksum(body)
    encoded: bytes = base45.b45encode(body)
    return PREFIX + encoded.decode("ascii")


def _check_category_key(domain: Domain, signed: SignedMessage, signature: bytes) -> blinding.CategoryKey:
    """A carried key must be the patient's own (her signature), in a grant: anything else is refused. A
    guardian's grant may carry it too, once a gateway handed it to her."""
    msg = signed.message
    if not isinstance(msg, ConsentGrant):
        raise HealthCodeError("only a grant carries the patient's category key", "category_key")
    if len(signature) != _SIG_LEN:
        raise HealthCodeError(f"a category-key signature is {_SIG_LEN} bytes, not {len(signature)}", "category_key")
    try:
        return blinding.category_key(domain, msg.patient, signature)
    except SignatureError as exc:
        raise HealthCodeError(
            f"the category key in the health code is not the patient's: {exc}", "category_key"
        ) from None


def _payload(text: str) -> bytes:
    text = text.strip()
    if not text.upper().startswith(PREFIX):
        raise HealthCodeError(f"not a health code: it must start with {PREFIX!r}", "prefix")
    try:
        raw: bytes = base45.b45decode(text[len(PREFIX) :].upper())
    except ValueError:
        raise HealthCodeError("health code text is damaged (not valid base45)", "damaged") from None
    if len(raw) < 2:
        raise HealthCodeError("health code is too short", "length")
    if raw[0] not in _READABLE_VERSIONS:
        raise HealthCodeError(
            f"unsupported health code version {raw[0]} (this reader knows versions 1 and {VERSION})", "version"
        )
    return raw


_KINDS = {
    1: (_GRANT, _REVOKE, _GRANT | _EXPLICIT_SIGNER, _REVOKE | _EXPLICIT_SIGNER),
    2: (
        _GRANT,
        _REVOKE,
        _GRANT | _EXPLICIT_SIGNER,
        _REVOKE | _EXPLICIT_SIGNER,
        _GRANT | _CATEGORY_KEY,
        _GRANT | _EXPLICIT_SIGNER | _CATEGORY_KEY,
    ),
}


def _expected_length(version: int, kind: int) -> int:
    if kind not in _KINDS[version]:
        raise HealthCodeError(f"unknown health code message type 0x{kind:02x}", "version")
    size = _HEAD.size + _TAIL_FIELDS.size + _SIG_LEN + _CHECK_LEN
    if kind & 0x0F == _GRANT:
        size += _GRANT_FIELDS.size
    return size + (20 if kind & _EXPLICIT_SIGNER else 0) + (_SIG_LEN if kind & _CATEGORY_KEY else 0)


def decode(text: str) -> HealthCode:
    """Reads health-code text back into the signed message, its domain and the category key it carries.

    Raises :class:`HealthCodeError` on a wrong prefix, an unknown version or type, a wrong length, a
    checksum mismatch, or a carried category key that is not the patient's (kind ``category_key``). It
    does **not** check the consent's signature: see :func:`summary` or :func:`node_client.signing.verify`.
    """
    raw = _payload(text)
    kind = raw[1]
    expected = _expected_length(raw[0], kind)
    if len(raw) != expected:
        raise HealthCodeError(f"health code has {len(raw)} bytes, expected {expected} (cut short or padded?)", "length")
    body, check = raw[:-_CHECK_LEN], raw[-_CHECK_LEN:]
    if _checksum(body) != check:
        raise HealthCodeError("health code checksum does not match: the code is damaged", "checksum")
    _v, _k, chain_id, contract, patient, grantee = _HEAD.unpack_from(body, 0)
    off = _HEAD.size
    grant_fields: tuple[Any, ...] | None = None
    if kind & 0x0F == _GRANT:
        grant_fields = _GRANT_FIELDS.unpack_from(body, off)
        off += _GRANT_FIELDS.size
    nonce, deadline = _TAIL_FIELDS.unpack_from(body, off)
    off += _TAIL_FIELDS.size
    patient_addr = to_checksum_address(patient)
    grantee_addr = to_checksum_address(grantee)
    signer = patient_addr
    if kind & _EXPLICIT_SIGNER:
        signer = to_checksum_address(body[off : off + 20])
        off += 20
    signature = bytes(body[off : off + _SIG_LEN])
    key_signature = bytes(body[off + _SIG_LEN : off + 2 * _SIG_LEN]) if kind & _CATEGORY_KEY else None
    deadline_int = int.from_bytes(deadline, "big")
    message: ConsentGrant | ConsentRevoke
    if grant_fields is not None:
        categories, purposes, valid_from, valid_until = grant_fields
        message = ConsentGrant(
            patient=patient_addr,
            grantee=grantee_addr,
            categories=categories,
            purposes=purposes,
            valid_from=int.from_bytes(valid_from, "big"),
            valid_until=int.from_bytes(valid_until, "big"),
            nonce=nonce,
            deadline=deadline_int,
        )
    else:
        message = ConsentRevoke(patient=patient_addr, grantee=grantee_addr, nonce=nonce, deadline=deadline_int)
    domain = Domain(chain_id=chain_id, verifying_contract=to_checksum_address(contract))
    signed = SignedMessage(message, signer, signature)
    if key_signature is not None:
        _check_category_key(domain, signed, key_signature)
    return HealthCode(signed, domain, key_signature)


def payload_size(text: str) -> int:
    """The binary payload's size in bytes (checksum included)."""
    return len(_payload(text))


# ---------------------------------------------------------------- pictures


def qr(text: str) -> segno.QRCode:
    """The ``segno`` QR code of a health code (alphanumeric mode, error correction at least M).

    Refuses text that is not a well-formed health code, and codes that would need a QR version above 15.
    """
    import segno

    decode(text)
    code = segno.make(text.strip().upper(), error=QR_ERROR, mode="alphanumeric", micro=False)
    if not isinstance(code.version, int) or code.version > MAX_QR_VERSION:  # pragma: no cover - cannot happen
        raise HealthCodeError(f"health code needs QR version {code.version} (> {MAX_QR_VERSION})")
    return code


def render_png(text: str, path: str | Path, *, scale: int = 6, border: int = 4) -> Path:
    """Writes the health code as a PNG picture (``scale`` pixels per module, quiet zone ``border``)."""
    path = Path(path)
    qr(text).save(str(path), kind="png", scale=scale, border=border)
    return path


def render_svg(text: str, path: str | Path, *, scale: int = 6, border: int = 4) -> Path:
    """Writes the health code as an SVG picture."""
    path = Path(path)
    qr(text).save(str(path), kind="svg", scale=scale, border=border, title="Health code / 健康码")
    return path


def read_image(source: str | Path | bytes) -> str:
    """Finds a health code in a picture (PNG, JPEG, … anything Pillow opens) and returns its text.

    ``source`` is a file path or the picture's bytes (an upload).
    """
    import io

    import zxingcpp
    from PIL import Image, UnidentifiedImageError

    path: str | Path
    opened: io.BytesIO | Path
    if isinstance(source, bytes):
        path, opened = "the picture", io.BytesIO(source)
    else:
        path = Path(source)
        if path.suffix.lower() == ".svg":
            raise HealthCodeError(
                f"{path}: reading SVG pictures is not supported; use the PNG or the code text", "unreadable_picture"
            )
        opened = path
    try:
        with Image.open(opened) as img:
            img.load()
            barcodes = zxingcpp.read_barcodes(
                img.convert("L"), formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
            )
    except FileNotFoundError:
        raise HealthCodeError(f"{path}: no such file", "unreadable_picture") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise HealthCodeError(f"{path}: not a readable picture ({exc})", "unreadable_picture") from None
    texts = [b.text for b in barcodes if b.valid and b.text.strip().upper().startswith(PREFIX)]
    if not texts:
        found = f" ({len(barcodes)} other QR code(s) found)" if barcodes else ""
        raise HealthCodeError(f"{path}: no health code found in the picture{found}", "no_code_in_picture")
    return texts[0].strip()


# ---------------------------------------------------------------- summary


@dataclass(frozen=True, slots=True)
class TermView:
    """A category or purpose as the hospital sees it."""

    slug: str
    en: str
    zh: str
    sensitive: bool = False


@dataclass(frozen=True, slots=True)
class HealthCodeSummary:
    """What a health code says, in plain language, and what could be checked about it.

    ``None`` in a check field means "not checked" (no ledger given). ``signature`` is ``"valid"``,
    ``"invalid"`` or ``"checked on-chain"`` (a contract-wallet signer: only the contract can tell).
    """

    kind: str  # "grant" | "revoke"
    chain_id: int
    verifying_contract: str
    patient: str
    grantee: str
    grantee_name: str | None
    categories: tuple[TermView, ...]
    purposes: tuple[TermView, ...]
    valid_from: datetime | None
    valid_until: datetime | None
    nonce: int
    deadline: datetime
    signer: str
    signed_by: str  # "patient" | "guardian"
    signature: str  # "valid" | "invalid" | "checked on-chain"
    signature_problem: str | None
    deadline_expired: bool
    checked_at: datetime
    online: bool
    guardian_authorized: bool | None = None  # guardian codes, with a ledger
    guardian_until: datetime | None = None
    used: bool | None = None  # with a ledger: the pair's nonce has moved past the code's
    ledger_nonce: int | None = None
    ledger_matches: bool | None = None  # with a ledger: the code is for this chain and ConsentRegistry
    sensitive: bool = field(default=False)
    category_key: bool = False  # the code carries the patient's category key (categories named in full)

    @property
    def submittable(self) -> bool | None:
        """Whether submitting should succeed as far as can be told (``None``: offline, not fully known)."""
        if self.signature == "invalid" or self.deadline_expired or self.used or self.ledger_matches is False:
            return False
        if self.guardian_authorized is False:
            return False
        if not self.online:
            return None
        return True

    def rows(self, *, lang: str = "en") -> list[tuple[str, str]]:
        """(label, value) pairs for a table; ``lang`` "en" or "zh" picks the term descriptions first."""

        def fmt(dt: datetime | None) -> str:
            return dt.strftime("%Y-%m-%d %H:%M:%S UTC") if dt else "-"

        def term(t: TermView) -> str:
            first, second = (t.zh, t.en) if lang == "zh" else (t.en, t.zh)
            return f"{first} / {second}" + ("  [SENSITIVE 敏感]" if t.sensitive else "")

        def yesno(value: bool | None, yes: str, no: str) -> str:
            return "not checked (offline)" if value is None else (yes if value else no)

        grantee = (f"{self.grantee_name}\n" if self.grantee_name else "") + self.grantee
        rows = [
            ("type", "consent grant 授权" if self.kind == "grant" else "consent revocation 撤销授权"),
            ("patient", self.patient),
            ("grantee", grantee),
        ]
        if self.kind == "grant":
            rows += [
                ("categories", "\n".join(term(t) for t in self.categories) or "-"),
                ("category key", "included 已附带" if self.category_key else "not included 未附带"),
                ("purposes", "\n".join(term(t) for t in self.purposes) or "-"),
                ("valid from", fmt(self.valid_from)),
                ("valid until", fmt(self.valid_until)),
            ]
        signed_by = "patient 本人" if self.signed_by == "patient" else f"guardian 监护人 {self.signer}"
        if self.signed_by == "guardian":
            if self.guardian_authorized is None:
                signed_by += " (guardianship not checked: offline)"
            elif self.guardian_authorized:
                signed_by += f" (guardian until {fmt(self.guardian_until)})"
            else:
                signed_by += " (NOT a current guardian of the patient)"
        sig = self.signature + (f" ({self.signature_problem})" if self.signature_problem else "")
        rows += [
            ("signed by", signed_by),
            ("signature", sig),
            ("submit before", fmt(self.deadline) + ("  EXPIRED 已过期" if self.deadline_expired else "")),
            ("already used", yesno(self.used, "yes — used or replaced by a later grant/revoke", "no")),
            (
                "chain / contract",
                f"{self.chain_id} / {self.verifying_contract}"
                + ("" if self.ledger_matches is not False else "  (NOT this ledger)"),
            ),
        ]
        return rows

    def as_dict(self) -> dict[str, Any]:
        def ts(dt: datetime | None) -> int | None:
            return int(dt.timestamp()) if dt else None

        return {
            "type": self.kind,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
            "patient": self.patient,
            "grantee": self.grantee,
            "granteeName": self.grantee_name,
            "categories": [{"slug": t.slug, "en": t.en, "zh": t.zh, "sensitive": t.sensitive} for t in self.categories],
            "purposes": [{"slug": t.slug, "en": t.en, "zh": t.zh} for t in self.purposes],
            "validFrom": ts(self.valid_from),
            "validUntil": ts(self.valid_until),
            "nonce": self.nonce,
            "deadline": ts(self.deadline),
            "deadlineExpired": self.deadline_expired,
            "signer": self.signer,
            "signedBy": self.signed_by,
            "signature": self.signature,
            "signatureProblem": self.signature_problem,
            "guardianAuthorized": self.guardian_authorized,
            "guardianUntil": ts(self.guardian_until),
            "used": self.used,
            "ledgerNonce": self.ledger_nonce,
            "ledgerMatches": self.ledger_matches,
            "online": self.online,
            "checkedAt": ts(self.checked_at),
            "submittable": self.submittable,
            "categoryKey": self.category_key,
        }


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _names(members: Mapping[str, str] | Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    if members is None:
        return {}
    if isinstance(members, Mapping):
        return {to_checksum_address(k): str(v) for k, v in members.items()}
    return {to_checksum_address(m["address"]): str(m.get("name", "")) for m in members}


def _slot_terms(slots: int, key: blinding.CategoryKey | None) -> tuple[TermView, ...]:
    """The categories in a slot mask: named with the patient's key, else only the public slots by name."""
    named: list[TermView] = []
    unnamed: list[TermView] = []
    for slot in range(SLOT_COUNT):
        if not slots >> slot & 1:
            continue
        cat = blinding.slot_category(key, slot)
        if cat is None:
            unnamed.append(TermView(f"slot-{slot}", f"Protected category {slot}", f"受保护类别 {slot}"))
        else:
            t = CATEGORIES[cat]
            named.append(TermView(t.slug, t.en, t.zh, t.sensitive))
    order = {t.slug: t.bit for t in CATEGORIES}
    return (*sorted(named, key=lambda v: order[v.slug]), *unnamed)


def summary(
    signed: SignedMessage,
    domain: Domain,
    *,
    category_key: bytes | None = None,
    ledger: Ledger | None = None,
    members: Mapping[str, str] | Iterable[Mapping[str, Any]] | None = None,
    now: int | None = None,
) -> HealthCodeSummary:
    """Plain-language summary of a decoded health code, for the hospital before it submits.

    Off-line it checks the signature (ECDSA recovery) and the deadline against the wall clock. With a
    ``ledger`` it also uses the chain's time, tells whether the code was already used (the pair's nonce
    moved on), whether a guardian signer is a current guardian, whether the code is for this ledger, and
    recognises contract-wallet signers (their signatures are checked on-chain only). ``members`` (the
    manifest's member list, or an address → name mapping) gives the grantee's display name.
    ``category_key`` (the patient's key signature, :attr:`HealthCode.category_key`) names the blinded
    slots; without it they read "Protected category N" (slot N).
    """
    msg = signed.message
    names = _names(members)
    signed_by = "patient" if to_checksum_address(signed.signer) == to_checksum_address(msg.patient) else "guardian"
    online = ledger is not None
    if now is None:
        now = ledger.client.block_timestamp() if ledger is not None else int(time.time())

    signature, problem = "valid", None
    try:
        verify(domain, signed)
    except SignatureError as exc:
        signature, problem = "invalid", str(exc)
    guardian_ok: bool | None = None
    guardian_until: datetime | None = None
    used: bool | None = None
    ledger_nonce: int | None = None
    matches: bool | None = None
    if ledger is not None:
        if signature == "invalid" and ledger.client.w3.eth.get_code(to_checksum_address(signed.signer)):
            signature, problem = "checked on-chain", "contract-wallet signer (ERC-1271)"
        on_chain = ledger.consents.domain()
        matches = (on_chain.chain_id, to_checksum_address(on_chain.verifying_contract)) == (
            domain.chain_id,
            to_checksum_address(domain.verifying_contract),
        )
        if matches:
            ledger_nonce = ledger.consents.nonces(msg.patient, msg.grantee)
            used = ledger_nonce > msg.nonce
            if signed_by == "guardian":
                until = ledger.consents.guardian_until(msg.patient, signed.signer)
                guardian_ok = until > now
                guardian_until = _utc(until) if until else None

    cats: tuple[TermView, ...] = ()
    purps: tuple[TermView, ...] = ()
    valid_from = valid_until = None
    if isinstance(msg, ConsentGrant):
        key = None if category_key is None else _check_category_key(domain, signed, category_key)
        cats = _slot_terms(msg.categories, key)
        purps = tuple(TermView(t.slug, t.en, t.zh) for t in PURPOSES if msg.purposes >> t.bit & 1)
        valid_from, valid_until = _utc(msg.valid_from), _utc(msg.valid_until)
    return HealthCodeSummary(
        kind="grant" if isinstance(msg, ConsentGrant) else "revoke",
        chain_id=domain.chain_id,
        verifying_contract=to_checksum_address(domain.verifying_contract),
        patient=to_checksum_address(msg.patient),
        grantee=to_checksum_address(msg.grantee),
        grantee_name=names.get(to_checksum_address(msg.grantee)) or None,
        categories=cats,
        purposes=purps,
        valid_from=valid_from,
        valid_until=valid_until,
        nonce=msg.nonce,
        deadline=_utc(min(msg.deadline, _U40 - 1)),
        signer=to_checksum_address(signed.signer),
        signed_by=signed_by,
        signature=signature,
        signature_problem=problem,
        deadline_expired=msg.deadline < now,
        checked_at=_utc(now),
        online=online,
        guardian_authorized=guardian_ok,
        guardian_until=guardian_until,
        used=used,
        ledger_nonce=ledger_nonce,
        ledger_matches=matches,
        sensitive=any(t.sensitive for t in cats),
        category_key=category_key is not None,
    )
