"""``hcl patient``: what a hospital does with a patient at a gateway.

    hcl patient lookup --url https://gw.example --system urn:oid:2.16.156.10011.1.1 --value 110101... --key hospital.json

A lookup is a release of the patient's identifiers record to you (her consent for ``identifiers`` needed,
ledgered in her access log); the identifier travels in the request body, never in a URL.
"""

from __future__ import annotations

from typing import Annotated

import typer

from node_client._cli_common import GatewayUrlOpt, KeyOpt, PasswordFileOpt, SignerOpts, console, err_console, print_json

__all__ = ["patient_app"]

patient_app = typer.Typer(help="A patient at a gateway: find her by an identifier.", no_args_is_help=True)


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
