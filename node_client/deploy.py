"""Deploying and wiring the contracts, running initial governance, and the deployment manifest.

A deployment is described by a :class:`Manifest` (JSON): chain id, deploy block, compiler, each contract's
address and ABI hash, the governance it started with and the initial members' off-chain descriptions
(names stay off-chain: on-chain there is only ``metadataHash``). Everything that talks to a deployment
(CLI, gateway, auditor) starts from the manifest and checks it is on the right chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from node_client._abi import CONTRACT_NAMES, abi_hash, load_abi
from node_client._client import ChainClient
from node_client._compile import CompileResult, compile_contracts
from node_client._exceptions import DeploymentError
from node_client.contracts import AccessLedger, Action, ConsentRegistry, MemberRegistry, RecordRegistry
from node_client.keys import dev_account
from node_client.vocabulary import Role

__all__ = [
    "Ledger",
    "Manifest",
    "MemberSpec",
    "chain_funds_dev_keys",
    "deploy",
    "dev_members",
    "metadata_hash",
]

MANIFEST_VERSION = 1
#: metadata keys hashed only when a member has them (older members' hashes stay what they were)
OPTIONAL_METADATA = ("endpoint", "name_zh", "name_en")


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """An institution to onboard: its address, roles, X25519 public key and off-chain description.

    ``endpoint`` is where a gateway member is reached (``https://…``): part of the hashed metadata, so a
    tampered manifest cannot redirect other gateways; empty for every other member. ``name_zh`` and
    ``name_en`` are the name as the portal shows it in each language (``name`` where one is empty)."""

    address: str
    roles: int
    encryption_key: bytes
    name: str
    kind: str = ""
    endpoint: str = ""
    name_zh: str = ""
    name_en: str = ""

    @property
    def metadata(self) -> dict[str, str]:
        """The off-chain description whose hash is registered: ``endpoint`` and the localised names only
        when set, so the hash of a member without them is what it always was."""
        meta = {"name": self.name, "kind": self.kind, "address": to_checksum_address(self.address)}
        for key in OPTIONAL_METADATA:
            if getattr(self, key):
                meta[key] = getattr(self, key)
        return meta

    @property
    def metadata_hash(self) -> bytes:
        return metadata_hash(self.metadata)


def metadata_hash(metadata: dict[str, Any]) -> bytes:
    """SHA-256 of the canonical JSON of an institution's off-chain metadata."""
    return hashlib.sha256(orjson.dumps(metadata, option=orjson.OPT_SORT_KEYS)).digest()


@dataclass(frozen=True)
class Manifest:
    """Where a deployment lives and what was deployed."""

    chain_id: int
    deploy_block: int
    solc: str
    contracts: dict[str, str]
    abi_hashes: dict[str, str]
    admins: list[str]
    threshold: int
    deployer: str
    members: list[dict[str, Any]] = field(default_factory=list)
    deployed_at: str = ""
    version: int = MANIFEST_VERSION
    #: A dev deployment: its governance keys are public throw-away keys, so dev-only conveniences (dev
    #: accounts, the demo) are allowed on it and nowhere else. A property of the deployment, not the chain id.
    dev: bool = False
    #: How deep a block must be before the gateway trusts what it grants (0: the chain does not reorganise
    #: blocks, as Hardhat's automine or QBFT's immediate finality; Clique can, see docs/reliability.md).
    confirmations: int = 0
    #: Seconds between blocks when the chain seals on a clock (0: blocks only when there are transactions);
    #: ``/healthz`` fails when the head is much older than that.
    block_period: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    def save(self, path: Path) -> None:
        """Writes the manifest atomically (temp file + rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(self.to_json())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            raise DeploymentError(f"no deployment manifest at {path}; run `hcl deploy` first") from None
        except orjson.JSONDecodeError as exc:
            raise DeploymentError(f"{path} is not a manifest: {exc}") from exc
        try:
            manifest = cls(**data)
        except TypeError as exc:
            raise DeploymentError(f"{path} is not a manifest: {exc}") from exc
        missing = set(CONTRACT_NAMES) - set(manifest.contracts)
        if missing:
            raise DeploymentError(f"{path} lacks contracts {sorted(missing)}")
        return manifest

    def connect(self, client: ChainClient, *, check_abis: bool = True) -> Ledger:
        """The contract wrappers of this deployment on ``client``'s chain.

        Raises :class:`DeploymentError` if the chain id differs or (``check_abis``) the packaged ABIs are
        not the ones deployed.
        """
        if client.chain_id != self.chain_id:
            raise DeploymentError(f"manifest is for chain {self.chain_id}, the node is chain {client.chain_id}")
        if check_abis:
            for name in CONTRACT_NAMES:
                if self.abi_hashes.get(name) != abi_hash(load_abi(name)):
                    raise DeploymentError(f"{name} was deployed with another ABI than this client's")
        kw = {"deploy_block": self.deploy_block}
        return Ledger(
            dev=self.dev,
            members=MemberRegistry(client, self.contracts["MemberRegistry"], **kw),
            consents=ConsentRegistry(client, self.contracts["ConsentRegistry"], **kw),
            records=RecordRegistry(client, self.contracts["RecordRegistry"], **kw),
            access=AccessLedger(client, self.contracts["AccessLedger"], **kw),
        )


@dataclass(frozen=True, slots=True)
class Ledger:
    """The four contracts of one deployment."""

    members: MemberRegistry
    consents: ConsentRegistry
    records: RecordRegistry
    access: AccessLedger
    #: the manifest's ``dev`` flag (see :attr:`Manifest.dev`)
    dev: bool = False

    @property
    def client(self) -> ChainClient:
        return self.members.client

    @property
    def addresses(self) -> dict[str, str]:
        return {w.name: w.address for w in (self.members, self.consents, self.records, self.access)}


def _deploy_one(
    client: ChainClient, deployer: LocalAccount, artifacts: CompileResult, name: str, *args: Any
) -> tuple[str, int]:
    art = artifacts.contracts[name]
    factory = client.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    # build_transaction estimates gas: through client.rpc, a reverting constructor raises its own error
    tx = client.rpc(
        lambda: factory.constructor(*args).build_transaction({"from": deployer.address, "chainId": client.chain_id})
    )
    tx.pop("nonce", None)
    result = client.send_raw({k: v for k, v in tx.items() if k in ("data", "gas", "value", "chainId")}, signer=deployer)
    address = result.receipt["contractAddress"]
    if not address:
        raise DeploymentError(f"{name} deployment produced no contract")
    return to_checksum_address(address), result.block_number


def deploy(
    client: ChainClient,
    *,
    deployer: LocalAccount,
    admins: Sequence[str],
    threshold: int,
    governance_signers: Sequence[LocalAccount] = (),
    members: Sequence[MemberSpec] = (),
    artifacts: CompileResult | None = None,
    dev: bool = False,
) -> Manifest:
    """Deploys and wires the four contracts and onboards ``members`` through governance.

    ``governance_signers`` are admin keys available now; onboarding needs at least ``threshold`` of them
    (on a real consortium, leave ``members`` empty and onboard with ``hcl member propose/approve``).
    ``dev`` marks a deployment governed by public throw-away keys (see :attr:`Manifest.dev`).
    """
    if members and len(governance_signers) < threshold:
        raise DeploymentError(f"onboarding members needs {threshold} admin signers, {len(governance_signers)} given")
    admin_set = {to_checksum_address(a) for a in admins}
    for signer in governance_signers:
        if signer.address not in admin_set:
            raise DeploymentError(f"governance signer {signer.address} is not among the admins")
    artifacts = artifacts or compile_contracts()
    for name in CONTRACT_NAMES:
        if abi_hash(artifacts.contracts[name].abi) != abi_hash(load_abi(name)):
            raise DeploymentError(f"packaged ABI of {name} is stale: run `hcl dev gen-abi`")

    members_addr, first_block = _deploy_one(
        client, deployer, artifacts, "MemberRegistry", [to_checksum_address(a) for a in admins], threshold
    )
    consents_addr, _ = _deploy_one(client, deployer, artifacts, "ConsentRegistry", members_addr)
    records_addr, _ = _deploy_one(client, deployer, artifacts, "RecordRegistry", members_addr)
    access_addr, _ = _deploy_one(client, deployer, artifacts, "AccessLedger", members_addr, consents_addr, records_addr)
    addresses = {
        "MemberRegistry": members_addr,
        "ConsentRegistry": consents_addr,
        "RecordRegistry": records_addr,
        "AccessLedger": access_addr,
    }
    registry = MemberRegistry(client, members_addr, deploy_block=first_block)
    signers = list(governance_signers)[:threshold]
    for spec in members:
        registry.enact(
            signers,
            Action.ADD_MEMBER,
            spec.address,
            arg=spec.roles,
            encryption_key=spec.encryption_key,
            metadata_hash=spec.metadata_hash,
        )
    return Manifest(
        chain_id=client.chain_id,
        deploy_block=first_block,
        solc=artifacts.solc_version,
        contracts=addresses,
        abi_hashes={name: abi_hash(load_abi(name)) for name in CONTRACT_NAMES},
        admins=sorted(admin_set),
        threshold=threshold,
        deployer=deployer.address,
        members=[_manifest_entry(m) for m in members],
        deployed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        dev=dev,
    )


def _manifest_entry(member: MemberSpec) -> dict[str, Any]:
    """A member as the manifest lists it: its hashed metadata (``endpoint`` only when set), roles and keys."""
    return {
        **member.metadata,
        "roles": member.roles,
        "metadataHash": "0x" + member.metadata_hash.hex(),
        "encryptionKey": "0x" + member.encryption_key.hex(),
    }


def dev_encryption_key(index: int) -> tuple[X25519PrivateKey, bytes]:
    """A deterministic X25519 key pair for dev account ``index`` (throw-away, derived from the public mnemonic)."""
    seed = hashlib.sha256(b"hcl-dev-x25519:" + bytes(dev_account(index).key)).digest()
    private = X25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, public


#: The dev consortium: (dev account index, roles, name, kind). Admins are dev accounts 0, 1, 2.
DEV_CONSORTIUM: tuple[tuple[int, int, str, str], ...] = (
    (3, int(Role.GATEWAY), "Regional Health Data Gateway", "gateway"),
    (4, int(Role.HOSPITAL | Role.EMERGENCY), "City First People's Hospital", "hospital"),
    (5, int(Role.CLINIC), "Riverside Community Health Centre", "clinic"),
    (6, int(Role.LAB), "Regional Clinical Laboratory", "lab"),
    (7, int(Role.PHARMACY), "Harbour Street Pharmacy", "pharmacy"),
    (8, int(Role.AUDITOR), "Provincial Health Data Audit Office", "auditor"),
    (9, int(Role.REGULATOR), "Municipal Health Commission", "regulator"),
)
#: The dev institutions' Chinese names (the portal's zh-CN pages show these; English pages show ``name``).
DEV_NAMES_ZH: dict[int, str] = {
    3: "区域健康数据网关",
    4: "市第一人民医院",
    5: "河滨社区卫生服务中心",
    6: "区域临床检验中心",
    7: "港湾街药房",
    8: "省卫生健康数据审计办公室",
    9: "市卫生健康委员会",
}
DEV_ADMINS: tuple[int, ...] = (0, 1, 2)
DEV_THRESHOLD = 2
#: Dev accounts used as patients by demos and tests.
DEV_PATIENTS: tuple[int, ...] = tuple(range(10, 20))


def dev_members() -> list[MemberSpec]:
    """The dev consortium's members (throw-away keys of Hardhat's public mnemonic)."""
    return [
        MemberSpec(
            dev_account(i).address, roles, dev_encryption_key(i)[1], name, kind, name_zh=DEV_NAMES_ZH[i], name_en=name
        )
        for i, roles, name, kind in DEV_CONSORTIUM
    ]


def deploy_dev(
    client: ChainClient, *, artifacts: CompileResult | None = None, extra_members: Sequence[MemberSpec] = ()
) -> Manifest:
    """Deploys with the dev consortium: admins = dev accounts 0-2, threshold 2, seven institutions, then
    ``extra_members`` (a dev network's per-institution gateways; none on Hardhat)."""
    admins = [dev_account(i) for i in DEV_ADMINS]
    return deploy(
        client,
        deployer=admins[0],
        admins=[a.address for a in admins],
        threshold=DEV_THRESHOLD,
        governance_signers=admins,
        members=[*dev_members(), *extra_members],
        artifacts=artifacts,
        dev=True,
    )


def chain_funds_dev_keys(client: ChainClient) -> bool:
    """Whether the chain's genesis funded the public dev keys: only dev chains do (Hardhat, a dev network).

    A dev consortium may be deployed only there; everywhere else its public admin keys would govern.
    """
    return client.rpc(lambda: client.w3.eth.get_balance(dev_account(0).address)) > 0
