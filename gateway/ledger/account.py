"""The gateway's own member account: the key it signs ``registerBatch``, ``logAccess`` and ``anchorBatch`` with."""

from __future__ import annotations

from pathlib import Path

from eth_account.signers.local import LocalAccount

from gateway.settings import GatewaySettings
from node_client.keys import dev_account, load_keystore

__all__ = ["gateway_account"]


def gateway_account(settings: GatewaySettings, *, dev: bool) -> LocalAccount:
    """The gateway's member account, from ``HCL_GATEWAY_KEY`` (a keystore and its password file) or, for a
    dev deployment only (``dev``: its manifest says so), ``HCL_GATEWAY_DEV_ACCOUNT``."""
    if settings.gateway_dev_account is not None:
        if not dev:
            raise ValueError("HCL_GATEWAY_DEV_ACCOUNT is only allowed on a dev deployment (manifest dev: true)")
        return dev_account(settings.gateway_dev_account)
    if settings.gateway_key is None:
        raise ValueError("the gateway needs its member key: HCL_GATEWAY_KEY (keystore) or HCL_GATEWAY_DEV_ACCOUNT")
    password_file = settings.gateway_key_password_file
    if password_file is None:
        raise ValueError("HCL_GATEWAY_KEY_PASSWORD_FILE is required with HCL_GATEWAY_KEY")
    return load_keystore(settings.gateway_key, Path(password_file).read_text().rstrip("\n"))
