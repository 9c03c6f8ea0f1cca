"""``hcl code``: make, show and submit health codes (健康码).

    hcl code new --key patient.json --grantee 0x… --categories allergies,lab-results --purpose treatment \\
                 --valid 30d --deadline 1d --out code.png
    hcl code show code.png          # summary; add --offline to skip the chain
    hcl code submit code.png --key hospital.json

The codec lives in :mod:`node_client.healthcode`; this module only parses options and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from eth_account.signers.local import LocalAccount
from rich.table import Table

from node_client import healthcode as hc
from node_client._cli_common import (
    ChainOpts,
    JsonOpt,
    SignerOpts,
    console,
    err_console,
    handle_errors,
    option_groups,
    own_category_key,
    parse_address,
    parse_duration,
    print_json,
)
from node_client._exceptions import ChainUnavailable, DeploymentError
from node_client.blinding import category_key
from node_client.signing import ConsentGrant, ConsentRevoke, Domain, sign
from node_client.vocabulary import EMERGENCY_SAFE

__all__ = ["app", "code_app"]

code_app = typer.Typer(help="Health codes (健康码): a patient's signed consent in a QR code.", no_args_is_help=True)
app = code_app

_PICTURES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}

SourceArg = Annotated[str, typer.Argument(help="a picture of the code (.png, .jpg, …), a .txt file, or the HCL:… text")]


def _read_source(source: str) -> str:
    """The health-code text from a picture, a text file, or the text itself."""
    text = source.strip()
    if text.upper().startswith(hc.PREFIX):
        return text
    path = Path(source)
    if not path.exists():
        raise hc.HealthCodeError(f"{source}: no such file, and not health-code text (it starts with {hc.PREFIX!r})")
    if path.suffix.lower() in _PICTURES or path.suffix.lower() == ".svg":
        return hc.read_image(path)
    return path.read_text().strip()


def _write(text: str, out: Path) -> None:
    suffix = out.suffix.lower()
    if suffix == ".png":
        hc.render_png(text, out)
    elif suffix == ".svg":
        hc.render_svg(text, out)
    elif suffix == ".txt":
        out.write_text(text + "\n")
    else:
        raise ValueError(f"--out {out}: use a .png, .svg or .txt file name")


@code_app.command("new")
@handle_errors
@option_groups
def code_new(
    grantee: Annotated[str, typer.Option(help="member (institution) address that may read")],
    categories: Annotated[str, typer.Option(help="e.g. allergies,lab-results")] = "",
    purposes: Annotated[str, typer.Option("--purpose", "--purposes", help="e.g. treatment,referral")] = "treatment",
    valid: Annotated[str, typer.Option(help="how long the consent lasts, e.g. 30d, 12h, 2w")] = "30d",
    deadline: Annotated[str, typer.Option(help="how long the code may be submitted, e.g. 1d, 2h")] = "1d",
    patient: Annotated[
        str | None, typer.Option(help="patient address when a guardian signs (default: the signer)")
    ] = None,
    ward_key_from: Annotated[
        str | None,
        typer.Option(
            "--ward-key-from",
            metavar="GATEWAY_URL",
            help="a guardian: fetch the patient's category key from a gateway that holds it (signed in as you)",
        ),
    ] = None,
    revoke: Annotated[bool, typer.Option("--revoke", help="make a revocation code instead of a grant")] = False,
    category_key: Annotated[
        bool,
        typer.Option(
            "--category-key/--no-category-key",
            help="put the patient's category key in a grant, so the grantee's gateway can name her categories",
        ),
    ] = True,
    out: Annotated[Path | None, typer.Option(help="write the code: .png or .svg picture, or .txt")] = None,
    *,
    chain: ChainOpts,
    signer: SignerOpts,
) -> None:
    """Sign a consent as the patient (or guardian) and make its health code.

    The domain and the pair's nonce are read from the chain named by the manifest; nothing is sent.
    The categories become the patient's slots with her category key (signed with the same key file). A
    guardian cannot make her ward's key: with --ward-key-from a gateway that holds it hands it to her (a
    current guardian), else she may grant only the emergency-safe categories.
    """
    from node_client.vocabulary import parse_categories, parse_purposes

    grantee_addr = parse_address(grantee, "grantee")
    deadline_s = parse_duration(deadline)
    ledger = chain.ledger()
    account = signer.account(dev=ledger.dev)
    patient_addr = parse_address(patient, "patient") if patient else account.address
    now = ledger.client.block_timestamp()
    domain = ledger.consents.domain()
    message: ConsentGrant | ConsentRevoke
    key_signature: bytes | None = None
    if revoke:
        message = ledger.consents.build_revoke(patient_addr, grantee_addr, deadline=now + deadline_s)
    else:
        if not categories:
            raise ValueError("--categories is required for a grant")
        ward_key = _ward_key(ward_key_from, account, patient_addr, domain)
        slots, key_signature = _slots(account, patient_addr, domain, parse_categories(categories), ward_key)
        message = ledger.consents.build_grant(
            patient_addr,
            grantee_addr,
            slots,
            parse_purposes(purposes),
            now,
            now + parse_duration(valid),
            deadline=now + deadline_s,
        )
    text = hc.encode(sign(account, domain, message), domain, key_signature if category_key else None)
    if out is not None:
        _write(text, out)
        version = hc.qr(text).version
        console.print(f"health code written to {out} (QR version {version}, {len(text)} characters)", soft_wrap=True)
    else:
        typer.echo(text)


def _ward_key(url: str | None, account: LocalAccount, patient: str, domain: Domain) -> bytes | None:
    """The patient's key signature from the gateway at ``url``, where ``account`` signs in as her guardian."""
    if url is None:
        return None
    if account.address.lower() == patient.lower():
        raise ValueError("--ward-key-from is for a guardian: a patient makes her own key")
    from node_client.gateway_client import GatewayClient

    with GatewayClient(url) as gw:
        gw.sign_in(account)
        return gw.category_key_of(patient)


def _slots(
    account: LocalAccount, patient: str, domain: Domain, categories: int, ward_key: bytes | None = None
) -> tuple[int, bytes | None]:
    """The slot mask of a grant's categories, and the patient's key signature (a guardian's: only the one a
    gateway handed her)."""
    if account.address.lower() == patient.lower():
        key, signature = own_category_key(account, domain)
        return key.slots(categories), signature
    if ward_key is not None:
        return category_key(domain, patient, ward_key).slots(categories), ward_key  # checks it is hers
    if categories & ~EMERGENCY_SAFE:
        raise ValueError(
            "a guardian cannot make the patient's category key: only emergency-safe categories "
            "(allergies, medications, conditions, immunizations) can be granted, unless --ward-key-from "
            "names a gateway that holds her key"
        )
    return categories, None  # the emergency-safe categories keep their bit for every patient


def _print_summary(s: hc.HealthCodeSummary) -> None:
    title = "Health code 健康码" + ("" if s.online else " (offline check)")
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for label, value in s.rows():
        style = None
        if (
            (label == "signature" and s.signature == "invalid")
            or (label == "submit before" and s.deadline_expired)
            or (label == "already used" and s.used)
        ):
            style = "red"
        elif label == "categories" and s.sensitive:
            style = "yellow"
        table.add_row(label, value, style=style)
    console.print(table)
    verdict = s.submittable
    if verdict is True:
        console.print("[green]can be submitted[/green]")
    elif verdict is False:
        console.print("[red]cannot be submitted[/red]")
    else:
        console.print("[yellow]offline: not checked whether it was used or who may sign[/yellow]")


@code_app.command("show")
@handle_errors
@option_groups
def code_show(
    source: SourceArg,
    offline: Annotated[bool, typer.Option("--offline", help="do not ask the chain (signature check only)")] = False,
    *,
    chain: ChainOpts,
    as_json: JsonOpt = False,
) -> None:
    """Show what a health code says and whether it can be submitted.

    Works off-line (signature and deadline); with a reachable chain it also checks whether the code was
    already used and whether a guardian signer is a current guardian.
    """
    code = hc.decode(_read_source(source))
    ledger = None
    members = None
    if not offline:
        try:
            members = chain.load_manifest().members
            ledger = chain.ledger()
        except (ChainUnavailable, DeploymentError) as exc:
            err_console.print(f"[yellow]offline check[/yellow]: {type(exc).__name__}: {exc}")
            ledger = None
    s = hc.summary(code.signed, code.domain, category_key=code.category_key, ledger=ledger, members=members)
    if as_json:
        print_json(s.as_dict())
    else:
        _print_summary(s)


@code_app.command("submit")
@handle_errors
@option_groups
def code_submit(
    source: SourceArg,
    *,
    chain: ChainOpts,
    signer: SignerOpts,
) -> None:
    """Submit a health code to the chain as a member (grantBySig / revokeBySig)."""
    code = hc.decode(_read_source(source))
    signed, domain = code.signed, code.domain
    ledger = chain.ledger()
    on_chain = ledger.consents.domain()
    if (on_chain.chain_id, on_chain.verifying_contract.lower()) != (domain.chain_id, domain.verifying_contract.lower()):
        raise hc.HealthCodeError(
            f"this code is for chain {domain.chain_id} / {domain.verifying_contract}, not this ledger "
            f"({on_chain.chain_id} / {on_chain.verifying_contract})"
        )
    submitter = signer.account(dev=ledger.dev)
    if isinstance(signed.message, ConsentGrant):
        consent_id, result = ledger.consents.grant_by_sig(submitter, signed)
        console.print(f"consent 0x{consent_id.hex()} granted, tx {result.tx_hash}", soft_wrap=True)
    else:
        result = ledger.consents.revoke_by_sig(submitter, signed)
        console.print(f"consent revoked, tx {result.tx_hash}", soft_wrap=True)
