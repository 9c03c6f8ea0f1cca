"""Keys: encrypted keystore files for real use, and Hardhat's well-known dev accounts for local chains.

Keys are never stored in plaintext: :func:`new_keystore` writes an eth-account (Web3 Secret Storage v3,
scrypt) file readable only by its owner. The dev accounts are derived from Hardhat's public test
mnemonic; they are throw-away keys that every Hardhat user knows and must never hold anything of value.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from node_client._exceptions import KeystoreError

__all__ = [
    "DEV_MNEMONIC",
    "dev_account",
    "keystore_address",
    "load_keystore",
    "new_keystore",
    "read_x25519_jwk",
    "write_x25519_jwk",
]

#: Hardhat's default, PUBLIC test mnemonic. Throw-away dev keys only.
DEV_MNEMONIC = "test test test test test test test test test test test junk"


@functools.cache
def dev_account(index: int) -> LocalAccount:
    """Hardhat dev account ``index`` (0..19 are funded by ``hardhat node``). Never use outside dev chains."""
    Account.enable_unaudited_hdwallet_features()
    account: LocalAccount = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return account


def _write_key_file(path: Path, data: dict[str, Any]) -> None:
    """Writes ``data`` as JSON to a new file of mode 0600; never overwrites (a key may be lost otherwise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeystoreError(f"{path} exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)


def new_keystore(path: Path, password: str, *, account: LocalAccount | None = None) -> str:
    """Creates a keystore at ``path`` (a fresh key unless ``account`` is given) and returns its address.

    Refuses to overwrite an existing file; the file is created with mode 0600.
    """
    if not password:
        raise KeystoreError("a keystore needs a non-empty password")
    acct = account or Account.create()
    data = Account.encrypt(acct.key, password)
    _write_key_file(path, data)
    return acct.address


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeystoreError(f"no keystore at {path}") from None
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"{path} is not a keystore file: {exc}") from exc
    if not isinstance(data, dict) or ("crypto" not in data and "Crypto" not in data):
        raise KeystoreError(f"{path} is not a keystore file")
    return data


def keystore_address(path: Path) -> str:
    """The address a keystore holds, without decrypting it."""
    data = _read(path)
    if "address" not in data:
        raise KeystoreError(f"{path} does not name its address")
    return to_checksum_address("0x" + str(data["address"]).removeprefix("0x"))


def load_keystore(path: Path, password: str) -> LocalAccount:
    """Decrypts the keystore at ``path``."""
    data = _read(path)
    try:
        key = Account.decrypt(data, password)
    except ValueError as exc:
        raise KeystoreError(f"cannot decrypt {path}: wrong password?") from exc
    account: LocalAccount = Account.from_key(key)
    return account


# ---------------------------------------------------------------- release (X25519) keys


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def write_x25519_jwk(path: Path, private: X25519PrivateKey | None = None) -> bytes:
    """Writes a member's release-decryption key as an X25519 JWK (RFC 8037) file, mode 0600.

    JWK because browsers import it directly (WebCrypto) and so does every JOSE library; the portal opens
    releases with it inside the page. Refuses to overwrite. Returns the raw 32-byte public key, the value
    a member registers on-chain.
    """
    private = private or X25519PrivateKey.generate()
    d = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    x = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    _write_key_file(path, {"kty": "OKP", "crv": "X25519", "x": _b64u(x), "d": _b64u(d), "use": "enc"})
    return x


def read_x25519_jwk(path: Path) -> X25519PrivateKey:
    """Reads a key written by :func:`write_x25519_jwk` (any X25519 private JWK)."""
    try:
        jwk = json.loads(path.read_text())
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "X25519":
            raise ValueError("not an X25519 JWK")
        d = base64.urlsafe_b64decode(jwk["d"] + "=" * (-len(jwk["d"]) % 4))
        return X25519PrivateKey.from_private_bytes(d)
    except FileNotFoundError:
        raise KeystoreError(f"no key at {path}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeystoreError(f"{path} is not an X25519 private JWK: {exc}") from exc
