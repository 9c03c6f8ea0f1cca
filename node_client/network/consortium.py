"""The consortium file: who founds the network, who governs it, who runs a validator — and their keys.

A consortium file (TOML, example in ``deployments/consortium.example.toml``) names the founding
institutions with their roles, which of them are admins (the M-of-N governance), which run a Clique
validator and which of those run a gateway (``gateway = true``). :func:`materialise` turns it into keys in
one folder: a member account (encrypted keystore) and a release key (X25519 JWK) per institution, a sealing
key per validator, and for an institution with a gateway a second member, ``"<name> gateway"`` (role
GATEWAY, kind ``gateway``), with its own account and release key: the gateway signs for itself, never with
its institution's key. The *dev* consortium instead uses Hardhat's public dev accounts for the members (its
gateways: dev accounts 20, 21, … in validator order), so the demo and ``--dev-account`` work on it; its
validators still get fresh sealing keys.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from node_client._exceptions import DeploymentError
from node_client.deploy import (
    DEV_ADMINS,
    DEV_CONSORTIUM,
    DEV_NAMES_ZH,
    DEV_THRESHOLD,
    MemberSpec,
    dev_encryption_key,
    dev_members,
)
from node_client.keys import dev_account, load_keystore, new_keystore, write_x25519_jwk
from node_client.vocabulary import Role

__all__ = [
    "DEV_CHAIN_ID_NETWORK",
    "DEV_GATEWAY_ACCOUNTS",
    "Consortium",
    "Institution",
    "Keys",
    "materialise",
    "parse_roles",
]

#: Chain id of a dev consortium network (Hardhat's is 31337; nothing keys off either number).
DEV_CHAIN_ID_NETWORK = 31338
#: The first dev account of a dev network's per-institution gateways (0-19 are Hardhat's funded ones).
DEV_GATEWAY_ACCOUNTS = 20
_MAX_VALIDATORS = 32


@dataclass(frozen=True, slots=True)
class Institution:
    """One founding institution as the consortium file describes it."""

    name: str
    kind: str
    roles: int
    admin: bool = False
    validator: bool = False
    gateway: bool = False  # runs a gateway of its own, a member apart (see :attr:`gateway_name`)
    name_zh: str = ""  # the Chinese name the portal and the audit report show (``name`` when empty)

    @property
    def slug(self) -> str:
        """A file-name-safe short name (``city-first-people-s-hospital``)."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")[:40] or "institution"

    @property
    def gateway_name(self) -> str:
        """The member name of the institution's gateway."""
        return f"{self.name} gateway"

    @property
    def gateway_name_zh(self) -> str:
        return f"{self.name_zh}网关" if self.name_zh else ""

    def member(self, address: str, roles: int, public: bytes, *, gateway: bool = False) -> MemberSpec:
        """Its member (or its gateway's), with the localised names in the hashed metadata."""
        name, zh = (self.gateway_name, self.gateway_name_zh) if gateway else (self.name, self.name_zh)
        kind = "gateway" if gateway else self.kind
        return MemberSpec(address, roles, public, name, kind, name_zh=zh, name_en=name if zh else "")

    @property
    def gateway_slug(self) -> str:
        """File name of the gateway's keys (``keys/<slug>-gateway.json``) and its folder."""
        return f"{self.slug}-gateway"


@dataclass(frozen=True)
class Consortium:
    """A parsed consortium file (or the dev consortium)."""

    chain_id: int
    threshold: int
    institutions: tuple[Institution, ...]
    block_period: int = 1
    dev: bool = False

    @property
    def validators(self) -> tuple[Institution, ...]:
        return tuple(i for i in self.institutions if i.validator)

    @property
    def gateways(self) -> tuple[Institution, ...]:
        """The institutions running a gateway, in validator order (the dev gateways' account order)."""
        return tuple(i for i in self.validators if i.gateway)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Consortium:
        return cls(**{**data, "institutions": tuple(Institution(**i) for i in data["institutions"])})

    @classmethod
    def load(cls, path: Path) -> Consortium:
        """Parses and checks a consortium file; raises :class:`DeploymentError` naming what is wrong."""
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise DeploymentError(f"cannot read the consortium file {path}: {exc}") from exc
        try:
            institutions = tuple(_institution(raw) for raw in data.get("institution", []))
            consortium = cls(
                chain_id=int(data["chain_id"]),
                threshold=int(data["threshold"]),
                institutions=institutions,
                block_period=int(data.get("block_period", 1)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DeploymentError(f"{path}: {exc!r} (see deployments/consortium.example.toml)") from exc
        consortium.check()
        return consortium

    @classmethod
    def development(cls, validators: int) -> Consortium:
        """The dev consortium (public dev member keys, ``dev: true``) sealed by ``validators`` nodes, each
        validator institution with a gateway (but the one that is a gateway member itself)."""
        hosts = [entry for entry in DEV_CONSORTIUM if entry[3] != "gateway"] + [DEV_CONSORTIUM[0]]
        if not 1 <= validators <= len(hosts):
            raise DeploymentError(f"a dev network has 1 to {len(hosts)} validators, not {validators}")
        chosen = {entry[2] for entry in hosts[:validators]}
        institutions = tuple(
            Institution(
                name,
                kind,
                roles,
                validator=name in chosen,
                gateway=name in chosen and kind != "gateway",
                name_zh=DEV_NAMES_ZH[i],
            )
            for i, roles, name, kind in DEV_CONSORTIUM
        )
        return cls(DEV_CHAIN_ID_NETWORK, DEV_THRESHOLD, institutions, dev=True)

    def check(self) -> None:
        """The rules a network needs: admins to reach the threshold, at least one validator, unique names."""
        names = [i.name for i in self.institutions] + [i.gateway_name for i in self.institutions if i.gateway]
        slugs = {i.slug for i in self.institutions} | {i.gateway_slug for i in self.institutions if i.gateway}
        if len(set(names)) != len(names) or len(slugs) != len(names):
            raise DeploymentError("institution names must be unique (also as file names, and with ' gateway' added)")
        if any(i.gateway and not i.validator for i in self.institutions):
            raise DeploymentError("gateway = true needs validator = true: a gateway follows its institution's node")
        admins = sum(i.admin for i in self.institutions)
        if not self.dev and not 1 <= self.threshold <= admins:
            raise DeploymentError(f"threshold {self.threshold} needs between 1 and {admins} admins")
        if not 1 <= len(self.validators) <= _MAX_VALIDATORS:
            raise DeploymentError(f"a network needs 1 to {_MAX_VALIDATORS} validators")
        if self.chain_id in (1, 31337) or self.chain_id <= 0:
            raise DeploymentError(f"chain id {self.chain_id} is taken (mainnet, Hardhat): pick your own")
        if self.block_period < 1:
            raise DeploymentError("block_period is at least 1 second")


def parse_roles(names: list[str]) -> int:
    """``["hospital", "emergency"]`` → the role mask; a clear ValueError for an unknown name."""
    roles = 0
    for name in names:
        try:
            roles |= Role[str(name).strip().upper()]
        except KeyError:
            known = ", ".join(str(r.name).lower() for r in Role)
            raise ValueError(f"unknown role {name!r} (one of {known})") from None
    if not roles:
        raise ValueError("an institution needs at least one role")
    return int(roles)


def _institution(raw: dict[str, Any]) -> Institution:
    return Institution(
        name=str(raw["name"]),
        kind=str(raw.get("kind", "")),
        roles=parse_roles(list(raw["roles"])),
        admin=bool(raw.get("admin", False)),
        validator=bool(raw.get("validator", False)),
        gateway=bool(raw.get("gateway", False)),
        name_zh=str(raw.get("name_zh", "")),
    )


@dataclass
class Keys:
    """The keys of a materialised consortium, as the network needs them to deploy and onboard."""

    admins: list[LocalAccount]
    members: list[MemberSpec]
    #: institution name → the address its validator seals with
    signers: dict[str, str] = field(default_factory=dict)
    #: institution name → member keystore (not for the dev consortium, whose keys are public)
    member_keystores: dict[str, Path] = field(default_factory=dict)
    #: institution name → its gateway's member (also in :attr:`members`)
    gateways: dict[str, MemberSpec] = field(default_factory=dict)
    #: institution name → its gateway's keystore (real networks) or dev account index (dev networks)
    gateway_keystores: dict[str, Path] = field(default_factory=dict)
    gateway_dev_accounts: dict[str, int] = field(default_factory=dict)


def materialise(
    consortium: Consortium, folder: Path, password: str, *, endpoints: Mapping[str, str] | None = None
) -> Keys:
    """Creates (or, on a second run, reads back) every key the consortium needs under ``folder``.

    Keystores are encrypted with ``password`` and never overwritten; sealing keys go into each validator's
    own ``nodes/<slug>/keystore`` where geth looks for them. ``endpoints`` (institution name → URL) are
    the gateways' endpoints, part of their members' metadata.
    """
    signers: dict[str, str] = {
        v.name: _keystore(folder / "nodes" / v.slug / "keystore" / "signer.json", password).address
        for v in consortium.validators
    }
    keys = Keys(admins=[dev_account(i) for i in DEV_ADMINS] if consortium.dev else [], members=[], signers=signers)
    public_dev = {m.name: m for m in dev_members()} if consortium.dev else {}
    for inst in consortium.institutions:
        if inst.name in public_dev:  # a dev institution: its public dev key, nothing to store
            keys.members.append(public_dev[inst.name])
            continue
        path = folder / "keys" / f"{inst.slug}.json"
        account = _keystore(path, password)
        keys.member_keystores[inst.name] = path
        if inst.admin and not consortium.dev:
            keys.admins.append(account)
        jwk = folder / "keys" / f"{inst.slug}.x25519.jwk"
        public = _public_x25519(jwk)
        keys.members.append(inst.member(account.address, inst.roles, public))
    for n, inst in enumerate(consortium.gateways):
        spec = _gateway_member(consortium, inst, n, folder, password, keys)
        keys.gateways[inst.name] = replace(spec, endpoint=(endpoints or {}).get(inst.name, ""))
        keys.members.append(keys.gateways[inst.name])
    return keys


def _gateway_member(
    consortium: Consortium, inst: Institution, n: int, folder: Path, password: str, keys: Keys
) -> MemberSpec:
    """The ``n``-th gateway's member: dev account ``20 + n`` on a dev network, fresh keys otherwise."""
    roles = int(Role.GATEWAY)
    if consortium.dev:
        index = DEV_GATEWAY_ACCOUNTS + n
        keys.gateway_dev_accounts[inst.name] = index
        return inst.member(dev_account(index).address, roles, dev_encryption_key(index)[1], gateway=True)
    path = folder / "keys" / f"{inst.gateway_slug}.json"
    account = _keystore(path, password)
    keys.gateway_keystores[inst.name] = path
    public = _public_x25519(folder / "keys" / f"{inst.gateway_slug}.x25519.jwk")
    return inst.member(account.address, roles, public, gateway=True)


def _keystore(path: Path, password: str) -> LocalAccount:
    if not path.exists():
        new_keystore(path, password)
    return load_keystore(path, password)


def _public_x25519(path: Path) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from node_client.keys import read_x25519_jwk

    if not path.exists():
        return write_x25519_jwk(path)
    return read_x25519_jwk(path).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
