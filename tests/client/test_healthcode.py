"""Health codes (健康码): codec, QR pictures, summary and the ``hcl code`` commands."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import base45
import orjson
import pytest
import segno
from eth_utils import to_checksum_address
from typer.testing import CliRunner

from node_client import blinding
from node_client import healthcode as hc
from node_client._exceptions import NodeClientError
from node_client.code_cli import app
from node_client.deploy import Ledger, Manifest
from node_client.keys import dev_account
from node_client.signing import ConsentGrant, ConsentRevoke, Domain, SignedMessage, sign

runner = CliRunner()

T0 = 1_800_000_000
DOMAIN = Domain(chain_id=31337, verifying_contract="0x5FbDB2315678afecb367f032d93F642f64180aa3")
PATIENT = dev_account(10)
GUARDIAN = dev_account(11)
HOSPITAL = dev_account(4)
KEY_SIGNATURE = blinding.sign_category_key(PATIENT, DOMAIN)
KEY = blinding.category_key(DOMAIN, PATIENT.address, KEY_SIGNATURE)


def _grant(**kw: int) -> ConsentGrant:
    fields = dict(
        patient=PATIENT.address,
        grantee=HOSPITAL.address,
        categories=0x12,  # allergies + lab-results
        purposes=0x01,  # treatment
        valid_from=T0,
        valid_until=T0 + 30 * 86_400,
        nonce=0,
        deadline=T0 + 86_400,
    )
    fields.update(kw)
    return ConsentGrant(**fields)  # type: ignore[arg-type]


def _revoke() -> ConsentRevoke:
    return ConsentRevoke(patient=PATIENT.address, grantee=HOSPITAL.address, nonce=3, deadline=T0 + 3600)


def _parts(text: str) -> tuple[SignedMessage, Domain]:
    code = hc.decode(text)
    return code.signed, code.domain


def _summary(text: str, **kw: Any) -> hc.HealthCodeSummary:
    code = hc.decode(text)
    return hc.summary(code.signed, code.domain, category_key=code.category_key, **kw)


def _raw(text: str) -> bytearray:
    return bytearray(base45.b45decode(text[len(hc.PREFIX) :]))


def _text(raw: bytes | bytearray, *, fix_checksum: bool = True) -> str:
    raw = bytes(raw)
    if fix_checksum:
        import hashlib

        raw = raw[:-4] + hashlib.sha256(raw[:-4]).digest()[:4]
    return hc.PREFIX + base45.b45encode(raw).decode()


# ---------------------------------------------------------------- codec


def test_grant_round_trip() -> None:
    signed = sign(PATIENT, DOMAIN, _grant())
    text = hc.encode(signed, DOMAIN)
    assert text.startswith("HCL:")
    assert set(text[4:]) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
    assert hc.decode(text) == hc.HealthCode(signed, DOMAIN)
    assert hc.payload_size(text) == 165 and len(text) == 252


def test_guardian_grant_carries_the_signer() -> None:
    signed = sign(GUARDIAN, DOMAIN, _grant())
    text = hc.encode(signed, DOMAIN)
    code = hc.decode(text)
    back, domain = code.signed, code.domain
    assert back == signed and back.signer == GUARDIAN.address and domain == DOMAIN
    assert hc.payload_size(text) == 185


def test_revoke_round_trip() -> None:
    signed = sign(PATIENT, DOMAIN, _revoke())
    text = hc.encode(signed, DOMAIN)
    assert hc.decode(text) == hc.HealthCode(signed, DOMAIN)
    assert hc.payload_size(text) == 152


def test_extreme_values_round_trip() -> None:
    big = _grant(
        categories=0xFFFF, purposes=0xFF, valid_from=0, valid_until=2**40 - 1, nonce=2**64 - 1, deadline=2**40 - 1
    )
    domain = Domain(chain_id=2**64 - 1, verifying_contract=to_checksum_address("0x" + "ff" * 20))
    signed = sign(PATIENT, domain, big)
    assert hc.decode(hc.encode(signed, domain)) == hc.HealthCode(signed, domain)


def test_a_grant_carries_the_patients_category_key() -> None:
    signed = sign(PATIENT, DOMAIN, _grant(categories=KEY.slots(0x12)))
    text = hc.encode(signed, DOMAIN, KEY_SIGNATURE)
    code = hc.decode(text)
    assert code == hc.HealthCode(signed, DOMAIN, KEY_SIGNATURE)
    assert code.key() == KEY and hc.decode(hc.encode(signed, DOMAIN)).key() is None
    assert hc.payload_size(text) == 165 + 65 and _raw(text)[:2] == bytes([2, 0x41])


def test_a_version_1_code_still_decodes() -> None:
    signed = sign(GUARDIAN, DOMAIN, _grant())
    raw = _raw(hc.encode(signed, DOMAIN))
    raw[0] = 1  # version 1 is version 2 without the category key
    assert hc.decode(_text(raw)) == hc.HealthCode(signed, DOMAIN)
    raw = _raw(hc.encode(sign(PATIENT, DOMAIN, _grant()), DOMAIN, KEY_SIGNATURE))
    raw[0] = 1
    with pytest.raises(hc.HealthCodeError, match="message type"):
        hc.decode(_text(raw))


def test_a_category_key_that_is_not_the_patients_is_refused() -> None:
    signed = sign(PATIENT, DOMAIN, _grant())
    someone_elses = blinding.sign_category_key(GUARDIAN, DOMAIN)
    with pytest.raises(hc.HealthCodeError, match="not the patient's") as info:
        hc.encode(signed, DOMAIN, someone_elses)
    assert info.value.kind == "category_key"
    raw = _raw(hc.encode(signed, DOMAIN, KEY_SIGNATURE))
    raw[-5 - 65 : -5] = someone_elses  # swapped in after encoding, checksum fixed
    with pytest.raises(hc.HealthCodeError, match="not the patient's") as info:
        hc.decode(_text(raw))
    assert info.value.kind == "category_key"
    with pytest.raises(hc.HealthCodeError, match="not the patient's"):
        hc.encode(sign(GUARDIAN, DOMAIN, _grant()), DOMAIN, someone_elses)  # her own key is not her ward's
    with pytest.raises(hc.HealthCodeError, match="only a grant"):
        hc.encode(sign(PATIENT, DOMAIN, _revoke()), DOMAIN, KEY_SIGNATURE)


def test_a_guardian_who_was_handed_the_key_carries_it() -> None:
    """The guardian signs the grant; the key signature is still the patient's, and the code carries it."""
    signed = sign(GUARDIAN, DOMAIN, _grant())
    code = hc.decode(hc.encode(signed, DOMAIN, KEY_SIGNATURE))
    assert code.signed.signer == GUARDIAN.address and code.category_key == KEY_SIGNATURE
    assert code.key() == blinding.category_key(DOMAIN, PATIENT.address, KEY_SIGNATURE)


def test_lowercase_and_whitespace_are_tolerated() -> None:
    text = hc.encode(sign(PATIENT, DOMAIN, _grant()), DOMAIN)
    assert hc.decode(f"  {text.lower()}\n") == hc.decode(text)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(deadline=2**40), "deadline"),
        (dict(deadline=2**256 - 1), "deadline"),
        (dict(valid_until=2**40), "validUntil"),
        (dict(nonce=2**64), "nonce"),
    ],
)
def test_encode_refuses_what_does_not_fit(change: dict[str, int], message: str) -> None:
    grant = _grant(**change)
    signed = SignedMessage(grant, PATIENT.address, b"\x01" * 65)
    with pytest.raises(hc.HealthCodeError, match=message):
        hc.encode(signed, DOMAIN)


def test_encode_refuses_other_signatures_and_domains() -> None:
    signed = sign(PATIENT, DOMAIN, _grant())
    with pytest.raises(hc.HealthCodeError, match="65-byte"):
        hc.encode(dataclasses.replace(signed, signature=b"\x00" * 130), DOMAIN)
    with pytest.raises(hc.HealthCodeError, match="domain"):
        hc.encode(signed, dataclasses.replace(DOMAIN, name="Other"))


def test_errors_are_node_client_errors() -> None:
    assert issubclass(hc.HealthCodeError, NodeClientError)


def test_bad_prefix() -> None:
    text = hc.encode(sign(PATIENT, DOMAIN, _grant()), DOMAIN)
    with pytest.raises(hc.HealthCodeError, match="must start with"):
        hc.decode("HC1:" + text[4:])  # an EU DCC prefix is not ours
    with pytest.raises(hc.HealthCodeError, match="must start with"):
        hc.decode("")


def test_checksum_detects_damage() -> None:
    text = hc.encode(sign(PATIENT, DOMAIN, _grant()), DOMAIN)
    raw = _raw(text)
    raw[40] ^= 0x01  # a bit flip in the patient address
    with pytest.raises(hc.HealthCodeError, match="checksum"):
        hc.decode(_text(raw, fix_checksum=False))
    # one mistyped character of the text
    pos = 100
    swapped = text[:pos] + ("A" if text[pos] != "A" else "B") + text[pos + 1 :]
    with pytest.raises(hc.HealthCodeError):
        hc.decode(swapped)


def test_unknown_version_and_type() -> None:
    raw = _raw(hc.encode(sign(PATIENT, DOMAIN, _grant()), DOMAIN))
    raw[0] = 3
    with pytest.raises(hc.HealthCodeError, match="version 3"):
        hc.decode(_text(raw))
    raw[0] = 1
    raw[1] = 0x03
    with pytest.raises(hc.HealthCodeError, match="message type"):
        hc.decode(_text(raw))


def test_truncated_and_padded() -> None:
    text = hc.encode(sign(PATIENT, DOMAIN, _grant()), DOMAIN)
    raw = _raw(text)
    with pytest.raises(hc.HealthCodeError, match="expected 165"):
        hc.decode(_text(raw[:-10]))
    with pytest.raises(hc.HealthCodeError, match="expected 165"):
        hc.decode(_text(raw + b"\x00\x00"))
    with pytest.raises(hc.HealthCodeError):
        hc.decode(text[:-1])  # cut mid-group: not even base45
    with pytest.raises(hc.HealthCodeError, match="too short"):
        hc.decode(hc.PREFIX)
    with pytest.raises(hc.HealthCodeError, match="base45"):
        hc.decode(hc.PREFIX + "abc~")


# ---------------------------------------------------------------- QR pictures


@pytest.mark.parametrize("signer", [PATIENT, GUARDIAN])
def test_fits_qr_version_15_at_m(signer) -> None:
    for message in (_grant(categories=0x3FFF, purposes=0x7F), _revoke()):
        text = hc.encode(sign(signer, DOMAIN, message), DOMAIN)
        code = segno.make(text, error="m", boost_error=False, micro=False)
        assert code.mode == "alphanumeric"
        assert code.error == "M"
        assert code.version <= hc.MAX_QR_VERSION
    typical = hc.encode(sign(PATIENT, DOMAIN, _grant()), DOMAIN)
    assert segno.make(typical, error="m", boost_error=False).version == 9
    assert hc.qr(typical).version == 9
    widest = _grant(categories=0xFFFF, purposes=0xFF, nonce=2**64 - 1)
    keyed = hc.encode(sign(PATIENT, DOMAIN, widest), DOMAIN, KEY_SIGNATURE)
    assert len(keyed) == 4 + 345 and segno.make(keyed, error="m", boost_error=False).version == 11
    assert hc.qr(keyed).version == 11


def test_png_and_svg_and_read_back(tmp_path: Path) -> None:
    for signer, message in ((PATIENT, _grant()), (GUARDIAN, _grant()), (PATIENT, _revoke())):
        text = hc.encode(sign(signer, DOMAIN, message), DOMAIN)
        png = hc.render_png(text, tmp_path / "code.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert hc.read_image(png) == text
        assert hc.decode(hc.read_image(png)).signed.message == message
    svg = hc.render_svg(text, tmp_path / "code.svg")
    body = svg.read_text()
    assert body.lstrip().startswith("<?xml") or "<svg" in body[:200]
    assert "<svg" in body and "健康码" in body
    with pytest.raises(hc.HealthCodeError, match="SVG"):
        hc.read_image(svg)


def test_read_image_from_a_photo_like_picture(tmp_path: Path) -> None:
    """A scaled, blurred, off-centre JPEG on a grey background still reads."""
    from PIL import Image, ImageFilter

    text = hc.encode(sign(PATIENT, DOMAIN, _grant()), DOMAIN)
    hc.render_png(text, tmp_path / "code.png", scale=5)
    code = Image.open(tmp_path / "code.png").convert("L")
    canvas = Image.new("L", (code.width + 300, code.height + 200), 200)
    canvas.paste(code.resize((int(code.width * 1.3), int(code.height * 1.3))).rotate(8, fillcolor=255), (40, 60))
    canvas = canvas.filter(ImageFilter.GaussianBlur(1))
    canvas.save(tmp_path / "photo.jpg", quality=80)
    assert hc.read_image(tmp_path / "photo.jpg") == text


def test_read_image_errors(tmp_path: Path) -> None:
    other = tmp_path / "other.png"
    segno.make("https://example.org/not-a-health-code", micro=False).save(str(other), scale=5)
    with pytest.raises(hc.HealthCodeError, match="no health code"):
        hc.read_image(other)
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("L", (100, 100), 255).save(blank)
    with pytest.raises(hc.HealthCodeError, match="no health code"):
        hc.read_image(blank)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a picture")
    with pytest.raises(hc.HealthCodeError, match="not a readable picture"):
        hc.read_image(junk)
    with pytest.raises(hc.HealthCodeError, match="no such file"):
        hc.read_image(tmp_path / "missing.png")


def test_render_refuses_non_codes(tmp_path: Path) -> None:
    with pytest.raises(hc.HealthCodeError):
        hc.render_png("hello", tmp_path / "x.png")


# ---------------------------------------------------------------- summary (off-line)


def test_summary_offline_patient() -> None:
    signed = sign(PATIENT, DOMAIN, _grant(categories=KEY.slots(0x12 | 1 << 12)))  # + mental health (sensitive)
    s = _summary(hc.encode(signed, DOMAIN, KEY_SIGNATURE), members={HOSPITAL.address: "City Hospital"}, now=T0)
    assert s.kind == "grant" and s.patient == PATIENT.address and s.grantee == HOSPITAL.address
    assert s.grantee_name == "City Hospital"
    assert [t.slug for t in s.categories] == ["allergies", "lab-results", "mental-health"]
    assert [t.sensitive for t in s.categories] == [False, False, True] and s.sensitive
    assert s.categories[0].zh == "过敏与不耐受" and s.categories[0].en == "Allergies and intolerances"
    assert [t.slug for t in s.purposes] == ["treatment"]
    assert s.valid_from is not None and s.valid_from.timestamp() == T0 and s.valid_from.tzinfo is not None
    assert s.valid_until is not None and s.valid_until.timestamp() == T0 + 30 * 86_400
    assert s.signed_by == "patient" and s.signature == "valid" and s.signature_problem is None
    assert s.deadline_expired is False
    assert s.used is None and s.guardian_authorized is None and not s.online and s.submittable is None
    rows = dict(s.rows())
    assert (
        "City Hospital" in rows["grantee"]
        and "SENSITIVE" in rows["categories"]
        and "精神心理健康" in rows["categories"]
    )
    assert "2027-01-15" in rows["valid from"] and "UTC" in rows["valid from"]
    assert rows["already used"] == "not checked (offline)"
    assert orjson.loads(orjson.dumps(s.as_dict()))["categories"][2]["sensitive"] is True


def test_summary_names_blinded_slots_only_with_the_key() -> None:
    slots = KEY.slots(1 << 1 | 1 << 12)  # allergies (public) + mental health (blinded)
    mental = KEY.slot(12)
    without = hc.summary(sign(PATIENT, DOMAIN, _grant(categories=slots)), DOMAIN, now=T0)
    assert [t.slug for t in without.categories] == ["allergies", f"slot-{mental}"]
    assert without.categories[1].zh == f"受保护类别 {mental}" and not without.category_key
    assert dict(without.rows())["category key"].startswith("not included")
    keyed = _summary(hc.encode(sign(PATIENT, DOMAIN, _grant(categories=slots)), DOMAIN, KEY_SIGNATURE), now=T0)
    assert [t.slug for t in keyed.categories] == ["allergies", "mental-health"] and keyed.sensitive
    assert keyed.as_dict()["categoryKey"] is True


def test_summary_guardian_tampered_and_expired() -> None:
    signed = sign(GUARDIAN, DOMAIN, _grant())
    s = hc.summary(signed, DOMAIN, now=T0)
    assert s.signed_by == "guardian" and s.signer == GUARDIAN.address and s.signature == "valid"
    tampered = dataclasses.replace(signed, message=dataclasses.replace(signed.message, categories=0xFFFF))
    t = _summary(hc.encode(tampered, DOMAIN), now=T0)  # re-encoding keeps the checksum right
    assert t.signature == "invalid" and "not by" in (t.signature_problem or "") and t.submittable is False
    other_chain = dataclasses.replace(DOMAIN, chain_id=1)
    assert hc.summary(signed, other_chain, now=T0).signature == "invalid"
    late = hc.summary(signed, DOMAIN, now=T0 + 86_401)
    assert late.deadline_expired and late.submittable is False and "EXPIRED" in dict(late.rows())["submit before"]


def test_summary_of_revoke() -> None:
    s = hc.summary(sign(PATIENT, DOMAIN, _revoke()), DOMAIN, now=T0)
    assert s.kind == "revoke" and s.categories == () and s.valid_from is None and s.signature == "valid"
    assert "revocation" in dict(s.rows())["type"]


# ---------------------------------------------------------------- summary (on-chain)


def _chain_code(ledger: Ledger, patient, grantee: str, *, signer=None, deadline: int = 3600) -> str:
    now = ledger.client.block_timestamp()
    grant = ledger.consents.build_grant(
        patient.address, grantee, 0x12, 0x01, now, now + 30 * 86_400, deadline=now + deadline
    )
    domain = ledger.consents.domain()
    return hc.encode(sign(signer or patient, domain, grant), domain)


def test_summary_online_used_after_submission(ledger: Ledger, accounts, manifest: Manifest) -> None:
    patient, hospital = accounts.patients[0], accounts.hospital
    text = _chain_code(ledger, patient, hospital.address)
    signed, domain = _parts(text)
    before = hc.summary(signed, domain, ledger=ledger, members=manifest.members)
    assert before.online and before.ledger_matches and before.used is False and before.ledger_nonce == 0
    assert before.signature == "valid" and before.submittable is True
    assert before.grantee_name == "City First People's Hospital"
    consent_id, _ = ledger.consents.grant_by_sig(hospital, signed)
    assert ledger.consents.consent_of(patient.address, hospital.address).consent_id == consent_id
    after = hc.summary(signed, domain, ledger=ledger)
    assert after.used is True and after.ledger_nonce == 1 and after.submittable is False


def test_summary_online_guardian(ledger: Ledger, accounts, chain) -> None:
    patient, guardian, hospital = accounts.patients[1], accounts.patients[2], accounts.hospital
    text = _chain_code(ledger, patient, hospital.address, signer=guardian)
    signed, domain = _parts(text)
    s = hc.summary(signed, domain, ledger=ledger)
    assert s.signed_by == "guardian" and s.guardian_authorized is False and s.submittable is False
    assert "NOT a current guardian" in dict(s.rows())["signed by"]
    ledger.consents.set_guardian(patient, guardian.address, chain.now() + 365 * 86_400)
    s = hc.summary(signed, domain, ledger=ledger)
    assert s.guardian_authorized is True and s.guardian_until is not None and s.submittable is True
    ledger.consents.grant_by_sig(hospital, signed)
    assert hc.summary(signed, domain, ledger=ledger).used is True


def test_summary_online_other_ledger_and_expiry(ledger: Ledger, accounts, chain) -> None:
    patient, hospital = accounts.patients[0], accounts.hospital
    signed, domain = _parts(_chain_code(ledger, patient, hospital.address, deadline=60))
    elsewhere = dataclasses.replace(domain, verifying_contract="0x" + "12" * 20)
    s = hc.summary(signed, elsewhere, ledger=ledger)
    assert s.ledger_matches is False and s.used is None and s.submittable is False
    chain.advance(120)
    assert hc.summary(signed, domain, ledger=ledger).deadline_expired is True


# ---------------------------------------------------------------- CLI


@pytest.fixture
def env(tmp_path: Path, node, manifest: Manifest, ledger: Ledger) -> dict[str, str]:
    path = tmp_path / "manifest.json"
    manifest.save(path)
    return {"HCL_RPC_URL": node.url, "HCL_MANIFEST": str(path)}


def test_cli_help() -> None:
    for args in ([], ["new"], ["show"], ["submit"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
        assert "Usage" in result.output


def test_cli_new_show_submit(tmp_path: Path, env: dict[str, str], ledger: Ledger, accounts) -> None:
    patient, hospital = accounts.patients[0], accounts.hospital
    png = tmp_path / "code.png"
    made = runner.invoke(
        app,
        [
            "new",
            "--dev-account",
            "10",
            "--grantee",
            hospital.address,
            "--categories",
            "allergies,lab-results",
            "--purpose",
            "treatment",
            "--valid",
            "30d",
            "--deadline",
            "1d",
            "--out",
            str(png),
        ],
        env=env,
    )
    assert made.exit_code == 0, made.output
    assert "QR version 11" in made.output and png.exists()  # with the patient's category key

    shown = runner.invoke(app, ["show", str(png)], env=env)
    assert shown.exit_code == 0, shown.output
    for needle in (
        patient.address,
        "City First People's Hospital",
        "Laboratory results",
        "检验结果",
        "valid",
        "can be submitted",
    ):
        assert needle in shown.output, needle
    data = orjson.loads(runner.invoke(app, ["show", str(png), "--json"], env=env).output)
    assert data["used"] is False and data["signature"] == "valid" and data["signedBy"] == "patient"
    assert [c["slug"] for c in data["categories"]] == ["allergies", "lab-results"]

    offline = runner.invoke(app, ["show", str(png), "--offline", "--json"])
    assert offline.exit_code == 0, offline.output
    assert orjson.loads(offline.output)["used"] is None

    submitted = runner.invoke(app, ["submit", str(png), "--dev-account", "4"], env=env)
    assert submitted.exit_code == 0, submitted.output
    consent = ledger.consents.consent_of(patient.address, hospital.address)
    assert f"consent 0x{consent.consent_id.hex()} granted" in submitted.output
    key = hc.decode(hc.read_image(png)).key()
    assert key is not None and consent.categories == key.slots(0x12) and consent.purposes == 0x01

    again = runner.invoke(app, ["show", str(png), "--json"], env=env)
    assert orjson.loads(again.output)["used"] is True
    replay = runner.invoke(app, ["submit", str(png), "--dev-account", "4"], env=env)
    assert replay.exit_code == 1 and "ConsentInvalidNonce" in replay.output
    assert "this health code was already used" in " ".join(replay.output.split())


def test_cli_text_svg_and_revoke(tmp_path: Path, env: dict[str, str], ledger: Ledger, accounts) -> None:
    patient, hospital = accounts.patients[3], accounts.hospital
    made = runner.invoke(
        app, ["new", "--dev-account", "13", "--grantee", hospital.address, "--categories", "imaging"], env=env
    )
    assert made.exit_code == 0, made.output
    text = made.output.strip()
    assert text.startswith("HCL:")
    svg = tmp_path / "c.svg"
    assert (
        runner.invoke(
            app,
            ["new", "--dev-account", "13", "--grantee", hospital.address, "--categories", "imaging", "--out", str(svg)],
            env=env,
        ).exit_code
        == 0
    )
    assert "<svg" in svg.read_text()
    assert runner.invoke(app, ["submit", text, "--dev-account", "4"], env=env).exit_code == 0
    txt = tmp_path / "revoke.txt"
    made = runner.invoke(
        app, ["new", "--revoke", "--dev-account", "13", "--grantee", hospital.address, "--out", str(txt)], env=env
    )
    assert made.exit_code == 0, made.output
    shown = runner.invoke(app, ["show", str(txt)], env=env)
    assert shown.exit_code == 0 and "revocation" in shown.output
    # anyone who is a member may relay a revocation; here the lab does
    done = runner.invoke(app, ["submit", str(txt), "--dev-account", "6"], env=env)
    assert done.exit_code == 0 and "consent revoked" in done.output, done.output
    assert ledger.consents.consent_of(patient.address, hospital.address).status.name == "REVOKED"


def test_cli_errors(tmp_path: Path, env: dict[str, str], accounts) -> None:
    bad = runner.invoke(app, ["show", "HCL:NOTACODE", "--offline"])
    assert bad.exit_code == 1 and "HealthCodeError" in bad.output
    missing = runner.invoke(app, ["show", str(tmp_path / "none.png"), "--offline"])
    assert missing.exit_code == 1 and "HealthCodeError" in missing.output
    no_cats = runner.invoke(app, ["new", "--dev-account", "10", "--grantee", accounts.hospital.address], env=env)
    assert no_cats.exit_code == 2 and "--categories" in no_cats.output
    bad_out = runner.invoke(
        app,
        [
            "new",
            "--dev-account",
            "10",
            "--grantee",
            accounts.hospital.address,
            "--categories",
            "allergies",
            "--out",
            str(tmp_path / "x.pdf"),
        ],
        env=env,
    )
    assert bad_out.exit_code == 2 and ".png" in bad_out.output
    # a code for another ConsentRegistry is refused before anything is sent
    domain = Domain(chain_id=31337, verifying_contract="0x" + "12" * 20)
    text = hc.encode(sign(accounts.patients[0], domain, _grant(patient=accounts.patients[0].address)), domain)
    foreign = runner.invoke(app, ["submit", text, "--dev-account", "4"], env=env)
    assert foreign.exit_code == 1 and "not this ledger" in foreign.output


def test_summary_contract_signer_is_checked_on_chain(ledger: Ledger, accounts) -> None:
    patient = accounts.patients[0]
    signed, domain = _parts(_chain_code(ledger, patient, accounts.hospital.address))
    wallet = ledger.records.address  # any address holding code stands in for an ERC-1271 wallet
    as_contract = dataclasses.replace(signed, signer=wallet)
    assert hc.summary(as_contract, domain).signature == "invalid"  # off-line: cannot tell
    online = hc.summary(as_contract, domain, ledger=ledger)
    assert online.signature == "checked on-chain" and online.signed_by == "guardian"


def test_cli_guardian_code(tmp_path: Path, env: dict[str, str], ledger: Ledger, accounts, chain) -> None:
    patient, guardian, hospital = accounts.patients[1], accounts.patients[2], accounts.hospital
    ledger.consents.set_guardian(patient, guardian.address, chain.now() + 86_400 * 365)
    png = tmp_path / "g.png"
    made = runner.invoke(
        app,
        [
            "new",
            "--dev-account",
            "12",
            "--patient",
            patient.address,
            "--grantee",
            hospital.address,
            "--categories",
            "medications",
            "--out",
            str(png),
        ],
        env=env,
    )
    assert made.exit_code == 0, made.output
    data = orjson.loads(runner.invoke(app, ["show", str(png), "--json"], env=env).output)
    assert data["signedBy"] == "guardian" and data["guardianAuthorized"] is True and data["submittable"] is True
    assert runner.invoke(app, ["submit", str(png), "--dev-account", "4"], env=env).exit_code == 0
    assert ledger.consents.consent_of(patient.address, hospital.address).categories == 1 << 2
