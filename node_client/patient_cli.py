"""``hcl patient``: a patient at a gateway — a hospital finds her, she hands a gateway her category key.

    hcl patient lookup --url https://gw.example --system urn:oid:2.16.156.10011.1.1 --value 110101... --key hospital.json
    hcl patient category-key --key patient.json --enrol https://gw.example

A lookup is a release of the patient's identifiers record to you (her consent for ``identifiers`` needed,
ledgered in her access log); the identifier travels in the request body, never in a URL. Her category key
(:mod:`node_client.blinding`) tells a gateway which slot holds which of her categories: she signs its
request with her own key, and only the gateways she enrols it with (or shows a health code to) hold it.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

import typer

from node_client._cli_common import (
    ChainOpts,
    GatewayUrlOpt,
    JsonOpt,
    KeyOpt,
    PasswordFileOpt,
    SignerOpts,
    console,
    err_console,
    handle_errors,
    option_groups,
    own_category_key,
    print_json,
)

__all__ = ["patient_app"]

patient_app = typer.Typer(
    help="A patient at a gateway: find her by an identifier; hand a gateway her category key.", no_args_is_help=True
)


@patient_app.command("lookup")
def lookup_cmd(
    url: GatewayUrlOpt,
    system: Annotated[str, typer.Option("--system", help="the identifier's system (a URI), or phone")],
    value: Annotated[str, typer.Option("--value", help="the identifier's value")],
    purpose: Annotated[str, typer.Option("--purpose", help="why you look her up")] = "treatment",
    key: KeyOpt = None,
    password_file: PasswordFileOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the gateway's whole answer")] = False,
) -> None:
    """Find a patient's address by an identifier, signed in as a care provider.

    Exit 0 found; 1 not found (unknown, or no consent of hers for identifiers); 2 the gateway refused or
    does not answer.
    """
    from node_client._exceptions import GatewayProblem, NodeClientError
    from node_client.gateway_client import GatewayClient

    try:
        if key is None:
            raise ValueError("--key: your institution's keystore")
        account = SignerOpts(key=key, password_file=password_file).account()
        with GatewayClient(url) as gw:
            gw.sign_in(account)
            found = gw.lookup_patient(system, value, purpose=purpose)
    except GatewayProblem as exc:
        if exc.status == 404:
            err_console.print(f"[yellow]not found[/yellow]: {exc}")
            raise typer.Exit(1) from None
        err_console.print(f"[red]lookup failed[/red]: {exc}")
        raise typer.Exit(2) from None
    except (NodeClientError, ValueError, OSError) as exc:
        err_console.print(f"[red]lookup failed[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from None
    if json_out:
        print_json(found)
        return
    console.print(found["patient"])
    err_console.print(f"ledgered as a release of her identifiers record {found['recordId']}")


@patient_app.command("category-key")
@handle_errors
@option_groups
def category_key_cmd(
    enrol: Annotated[
        str | None,
        typer.Option(
            "--enrol", metavar="GATEWAY_URL", help="hand the key to this gateway (POST /v1/category-keys), signed in"
        ),
    ] = None,
    *,
    chain: ChainOpts,
    signer: SignerOpts,
    as_json: JsonOpt = False,
) -> None:
    """Make your category key (sign your CategoryKeyRequest) and, with --enrol, hand it to a gateway.

    Prints only your address and the key's fingerprint (the same wallet always makes the same key); the key
    itself, which tells which slot holds which of your categories, goes only to the gateway you name.
    """
    from node_client.gateway_client import GatewayClient

    ledger = chain.ledger()
    account = signer.account(dev=ledger.dev)
    key, signature = own_category_key(account, ledger.consents.domain())
    out: dict[str, object] = {"patient": account.address, "fingerprint": _fingerprint(key.key)}
    if enrol is not None:
        with GatewayClient(enrol) as gw:
            gw.sign_in(account)
            out["gateway"], out["learned"] = enrol, bool(gw.enrol_category_key(account.address, signature)["learned"])
    if as_json:
        print_json(out)
        return
    console.print(f"category key of {account.address}: fingerprint {out['fingerprint']}", soft_wrap=True)
    if enrol is None:
        err_console.print("not sent anywhere: --enrol GATEWAY_URL hands it to a gateway (a health code carries it too)")
    else:
        said = "now holds it" if out["learned"] else "already held it"
        console.print(f"the gateway {enrol} {said}", soft_wrap=True)


def _fingerprint(key: bytes) -> str:
    """A short public name of a key: tells two keys apart, reveals nothing of the permutation."""
    return hashlib.sha256(b"hcl/category-key-fingerprint/v1\x00" + key).hexdigest()[:16]
