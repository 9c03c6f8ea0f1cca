"""A consortium network in one folder: up, status, down, and a new validator institution.

The folder (default ``.hcl/network``) holds everything: ``network.json`` (the consortium as given, the
nodes, their ports and PIDs), ``genesis.json``, the keystore ``password`` (mode 0600), the member
keys under ``keys/`` and one geth datadir per validator under ``nodes/<institution>/``. ``up`` on a folder
that exists restarts the nodes on their data; nothing is generated twice.

With ``ipfs=True`` (``hcl network up --ipfs``) each validator institution also runs a Kubo node, repo under
``ipfs/<institution>/``, all of them in one private swarm keyed by ``swarm.key`` (mode 0600, made once):
see :mod:`node_client.network.kubo`. A network that has them restarts and stops them with its validators.

Every institution with ``gateway = true`` (in the dev consortium: every validator institution) has a gateway
member of its own, onboarded at the deployment with its endpoint ``http://127.0.0.1:<port>`` in its
metadata (the port is chosen once, at creation, and kept in ``network.json``). With ``gateways=True``
(``hcl network up --gateways``) those gateways run, one ``hcl gateway serve`` each, data under
``gateways/<institution>/``: see :mod:`node_client.network.gateways`. Once started, they restart and stop
with the network, as the Kubo nodes do.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from node_client._client import ChainClient
from node_client._exceptions import ChainUnavailable, DeploymentError, NodeError
from node_client._node import free_port
from node_client.contracts import Action
from node_client.deploy import Manifest, deploy, deploy_dev
from node_client.network.consortium import Consortium, Institution, Keys, materialise
from node_client.network.gateways import LEDGER_MODES, GatewayProcess, gateway_command, healthy
from node_client.network.genesis import clique_genesis
from node_client.network.geth import GethNode, find_geth
from node_client.network.kubo import KuboNode, connect, find_kubo, new_swarm_key
from node_client.vocabulary import Role

__all__ = ["DEFAULT_FOLDER", "GatewayStatus", "KuboStatus", "Network", "NodeStatus"]

DEFAULT_FOLDER = Path(".hcl/network")
#: Hardhat's dev accounts 0-19, pre-funded on a dev network so the demo's patients and admins can pay gas.
_DEV_ACCOUNTS = 20
Say = Callable[[str], None]
#: Blocks on top of a block before the gateway trusts a grant in it: Clique reorganised one block when a
#: validator restarted (docs/reliability.md); three at 1 s blocks is a few seconds of delay for a grant.
CLIQUE_CONFIRMATIONS = 3


@dataclass(frozen=True, slots=True)
class KuboStatus:
    """What ``hcl network status`` shows for an institution's IPFS node."""

    name: str
    api_url: str
    peer_id: str
    pid: int | None
    running: bool
    peers: int | None = None  # swarm connections now (the other institutions' nodes: nothing else can join)


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """What ``hcl network status`` shows for an institution's gateway."""

    name: str  # the gateway member's name
    url: str  # its endpoint, as registered in its member metadata
    pid: int | None
    running: bool
    healthy: bool | None = None  # ``/healthz`` answered 200 (None: not asked, the process is down)
    ledger_mode: str = ""
    store: str = ""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What ``hcl network status`` shows for one validator."""

    name: str
    url: str
    signer: str
    pid: int | None
    running: bool
    head: int | None = None
    head_hash: str | None = None
    peers: int | None = None
    signers: list[str] = field(default_factory=list)
    sealed: dict[str, int] = field(default_factory=dict)  # signer (lower case) → blocks sealed recently
    ipfs: KuboStatus | None = None  # the institution's IPFS node, on a network up with ``ipfs=True``
    gateway: GatewayStatus | None = None  # the institution's gateway, on a network up with ``gateways=True``

    @property
    def sealed_by_self(self) -> int:
        return self.sealed.get(self.signer.lower(), 0)


class Network:
    """The network in ``folder``; :meth:`up` creates it the first time."""

    def __init__(self, folder: Path = DEFAULT_FOLDER, *, say: Say | None = None) -> None:
        self.folder = folder
        self.say: Say = say or (lambda _msg: None)
        self.consortium: Consortium | None = None
        self._clients: dict[str, ChainClient] = {}
        self.nodes: list[GethNode] = []
        self.kubo: list[KuboNode] = []  # one per validator institution on a network with IPFS, else none
        self.gateways: list[GatewayProcess] = []  # one per institution with a gateway (ports fixed at creation)
        self.serve_gateways = False  # set by the first ``up(gateways=True)``: later ``up``s restart them
        self.manifest_path: Path | None = None
        if self._state_file.exists():
            self._load()

    @property
    def _state_file(self) -> Path:
        return self.folder / "network.json"

    @property
    def password_file(self) -> Path:
        return self.folder / "password"

    @property
    def swarm_key_file(self) -> Path:
        return self.folder / "swarm.key"

    @property
    def chain_id(self) -> int:
        return self.consortium.chain_id if self.consortium else 0

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def exists(self) -> bool:
        return bool(self.nodes)

    # ------------------------------------------------------------------ up

    def up(
        self,
        consortium: Consortium,
        *,
        manifest_path: Path,
        timeout: float = 120.0,
        ipfs: bool = False,
        gateways: bool = False,
        ledger_mode: str | None = None,
    ) -> Manifest:
        """Creates (first time) or restarts the network and returns its deployment manifest.

        On a network that exists, ``consortium`` is ignored: the one it was created with is kept.
        ``ipfs=True`` adds (or, on a network that has them, restarts) one Kubo node per validator
        institution, started once the validators agree and connected pairwise; a network that has Kubo
        nodes restarts them whatever ``ipfs`` says. ``gateways=True`` starts, after the deployment, the
        gateway of every institution that has one (``ledger_mode``: strict, the default, or batch, for
        gateways started now); once started they restart whatever ``gateways`` says.
        """
        geth = find_geth()
        kubo = find_kubo() if ipfs or self.kubo else None  # a missing binary fails before anything starts
        command = self._gateway_launch(consortium, ledger_mode) if gateways or self.serve_gateways else None
        if not self.exists:
            self._create(consortium, geth)
        self._start_all(geth)
        self.wait_agreement(timeout=timeout)
        if kubo is not None:
            self._swarm_up(kubo, timeout=timeout)
        if self.manifest_path is not None and self.manifest_path.exists():
            manifest = Manifest.load(self.manifest_path)
        else:
            manifest = self._deploy(manifest_path)
        if command is not None:
            self._gateways_up(command, ledger_mode=ledger_mode, timeout=max(timeout, 120.0))
        return manifest

    def _gateway_launch(self, consortium: Consortium, ledger_mode: str | None) -> list[str]:
        """How gateways are launched; checked before anything starts (no gateway, no ``hcl gateway``)."""
        if ledger_mode is not None and ledger_mode not in LEDGER_MODES:
            raise DeploymentError(f"ledger mode {ledger_mode!r}: one of {', '.join(LEDGER_MODES)}")
        if not (self.consortium or consortium).gateways:
            raise DeploymentError(
                "no institution of this network runs a gateway: mark validator institutions `gateway = true`"
                " in the consortium file (a network's gateways are fixed when it is created)"
            )
        return gateway_command()

    def _create(self, consortium: Consortium, geth: Path) -> None:
        self.say(f"creating keys for {len(consortium.institutions)} institutions in {self.folder}")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._password(consortium.dev)  # written once, read back by _keys
        self.consortium = consortium
        self.gateways = [self._new_gateway(inst) for inst in consortium.gateways]
        keys = self._keys(consortium)
        self.nodes = [self._new_node(v, keys) for v in consortium.validators]
        genesis = clique_genesis(
            chain_id=consortium.chain_id,
            signers=keys.signers.values(),
            funded=self._funded(consortium, keys),
            period=consortium.block_period,
        )
        genesis_file = self.folder / "genesis.json"
        genesis_file.write_text(json.dumps(genesis, indent=2))
        for node in self.nodes:
            self.say(f"initialising the validator of {node.name}")
            node.init(geth, genesis_file)
            node.write_peers([n.enode for n in self.nodes])
        self._save()

    def _password(self, dev: bool) -> str:
        """The keystore password: ``demo`` for a dev network (its keys are throw-away), random otherwise."""
        if not self.password_file.exists():
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write("demo" if dev else secrets.token_urlsafe(24))
        return self.password_file.read_text().strip()

    def _keys(self, consortium: Consortium) -> Keys:
        """The consortium's keys, its gateway members carrying the endpoints fixed at creation."""
        endpoints = {g.name: g.url for g in self.gateways}
        return materialise(consortium, self.folder, self.password_file.read_text().strip(), endpoints=endpoints)

    def _new_gateway(self, inst: Institution) -> GatewayProcess:
        """An institution's gateway: its port, and so its endpoint, chosen now and never again."""
        return GatewayProcess(
            name=inst.name, member=inst.gateway_name, data_dir=self.folder / "gateways" / inst.slug, port=free_port()
        )

    def _new_node(self, inst: Institution, keys: Keys) -> GethNode:
        return GethNode(
            name=inst.name,
            datadir=self.folder / "nodes" / inst.slug,
            signer=keys.signers[inst.name],
            p2p_port=free_port(),
            http_port=free_port(),
            authrpc_port=free_port(),
            node_key=GethNode.new_node_key(),
        )

    @staticmethod
    def _funded(consortium: Consortium, keys: Keys) -> list[str]:
        from node_client.keys import dev_account

        funded = [a.address for a in keys.admins] + [m.address for m in keys.members]
        if consortium.dev:
            funded += [dev_account(i).address for i in range(_DEV_ACCOUNTS)]
        return funded

    def _start_all(self, geth: Path, *, timeout: float = 120.0) -> None:
        """Starts the stopped validators, peers every running one with every other, then lets them seal."""
        for node in self.nodes:
            if not node.running:
                self.say(f"starting the validator of {node.name} on {node.url}")
                node.start(geth, chain_id=self.chain_id, password_file=self.password_file)
        self._save()
        self._peer_and_seal(timeout=timeout)

    def _peer_and_seal(self, *, timeout: float) -> None:
        running = [i for i, n in enumerate(self.nodes) if n.running]
        for i in running:
            for j in running:
                if i != j:
                    self.rpc(i, "admin_addPeer", [self.nodes[j].enode])
        deadline = time.monotonic() + timeout
        while any(int(self.rpc(i, "net_peerCount"), 16) < len(running) - 1 for i in running):
            if time.monotonic() > deadline:
                raise NodeError(f"the validators did not all connect within {timeout:.0f}s")
            time.sleep(0.2)
        for i in running:
            self.rpc(i, "miner_start")

    def _swarm_up(self, binary: Path, *, timeout: float) -> None:
        """Gives every validator institution its Kubo node (first time), starts the stopped ones and
        connects every running node with every other."""
        self._add_kubo_nodes(binary)
        for node in self.kubo:
            if not node.running:
                self.say(f"starting the IPFS node of {node.name} on {node.api_url}")
                node.start(binary)
                self._save()
        self._connect_swarm(timeout=timeout)

    def _add_kubo_nodes(self, binary: Path) -> None:
        """One Kubo node for each validator without one, all on the network's swarm key; every node's
        ``Peering.Peers`` then lists all the others (read at its next start)."""
        have = {k.name for k in self.kubo}
        missing = [n for n in self.nodes if n.name not in have]
        if not missing:
            return
        if not self.swarm_key_file.exists():
            self.say(f"creating the private swarm key {self.swarm_key_file}")
            new_swarm_key(self.swarm_key_file)
        for validator in missing:
            node = KuboNode(
                name=validator.name,
                repo=self.folder / "ipfs" / validator.datadir.name,  # the institution's slug, as nodes/<slug>
                swarm_port=free_port(),
                api_port=free_port(),
                gateway_port=free_port(),
            )
            self.say(f"initialising the IPFS node of {node.name}")
            node.init(binary, self.swarm_key_file)
            self.kubo.append(node)
        for node in self.kubo:
            node.write_peers(binary, self.kubo)
        self._save()

    def _connect_swarm(self, *, timeout: float) -> None:
        """``swarm connect`` between every two running Kubo nodes until each sees all the others."""
        running = [k for k in self.kubo if k.running]
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            missing = 0
            for a in running:
                seen = set(a.peers())
                for b in running:
                    if b is not a and b.peer_id not in seen:
                        missing += 1
                        try:
                            connect(a, b)
                        except NodeError as exc:
                            last = str(exc)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise NodeError(f"the IPFS nodes did not all connect within {timeout:.0f}s ({last or 'no error'})")
            time.sleep(0.2)

    def _deploy(self, manifest_path: Path) -> Manifest:
        consortium = self._consortium()
        keys = self._keys(consortium)
        client = ChainClient(rpc_url=self.nodes[0].url, timeout=60)
        self.say("deploying the contracts and onboarding the founding members (M-of-N governance)")
        if consortium.dev:
            manifest = deploy_dev(client, extra_members=list(keys.gateways.values()))
        else:
            manifest = deploy(
                client,
                deployer=keys.admins[0],
                admins=[a.address for a in keys.admins],
                threshold=consortium.threshold,
                governance_signers=keys.admins,
                members=keys.members,
            )
        manifest = replace(manifest, confirmations=CLIQUE_CONFIRMATIONS, block_period=consortium.block_period)
        manifest.save(manifest_path)
        self.manifest_path = manifest_path
        self._save()
        return manifest

    def _gateways_up(self, command: list[str], *, ledger_mode: str | None, timeout: float) -> None:
        """Starts every stopped gateway, one after the other, each ready once its ``/healthz`` is 200."""
        keys = self._keys(self._consortium())
        self.serve_gateways = True
        for gw in self.gateways:
            if gw.running:
                if ledger_mode and ledger_mode != gw.ledger_mode:
                    self.say(f"{gw.member} runs in {gw.ledger_mode} mode: `down` and `up` to change it")
                continue
            gw.ledger_mode = ledger_mode or gw.ledger_mode
            gw.store = gw.store or ("ipfs" if self._kubo_of(gw.name) else "local")
            gw.dev_account = keys.gateway_dev_accounts.get(gw.name)
            gw.keystore = keys.gateway_keystores.get(gw.name)
            self.say(f"starting {gw.member} on {gw.url} ({gw.ledger_mode}, {gw.store} store)")
            gw.start(command, self._gateway_env(gw), timeout=timeout)
            self._save()
        self._save()

    def _gateway_env(self, gw: GatewayProcess) -> dict[str, str]:
        """A gateway's environment: its own validator first in ``HCL_RPC_URL``, the others for failover."""
        if self.manifest_path is None:
            raise DeploymentError("the network has no deployment yet")
        own = [n.url for n in self.nodes if n.name == gw.name]
        kubo = self._kubo_of(gw.name)
        return gw.env(
            rpc_urls=own + [u for u in self.urls if u not in own],
            manifest=self.manifest_path,
            password_file=self.password_file,
            ipfs_api=kubo.api_multiaddr if kubo else None,
        )

    def _kubo_of(self, name: str) -> KuboNode | None:
        return next((k for k in self.kubo if k.name == name), None)

    # ------------------------------------------------------------------ observe

    def client(self, index: int = 0) -> ChainClient:
        """A client of node ``index``, made once: the wait loops ask the nodes several times a second."""
        url = self.nodes[index].url
        if url not in self._clients:
            self._clients[url] = ChainClient(rpc_url=url, timeout=10)
        return self._clients[url]

    def rpc(self, index: int, method: str, params: Sequence[Any] = ()) -> Any:
        """One JSON-RPC call to node ``index`` (the ``admin_``/``clique_`` namespaces web3 has no method for)."""
        client = self.client(index)
        reply = client.rpc(lambda: client.w3.provider.make_request(method, list(params)))  # type: ignore[arg-type]
        if "error" in reply:
            raise NodeError(f"{method} on {self.nodes[index].name}: {reply['error']}")
        return reply["result"]

    def wait_agreement(self, *, timeout: float = 120.0, nodes: Sequence[int] | None = None) -> int:
        """Waits until the running nodes are fully peered and agree on a block; returns its number."""
        chosen = [i for i in (nodes if nodes is not None else range(len(self.nodes))) if self.nodes[i].running]
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                agreed = self._agreed(chosen)
            except (ChainUnavailable, NodeError) as exc:
                agreed, last = None, str(exc)
            if agreed is not None:
                return agreed
            time.sleep(0.5)
        raise NodeError(f"the validators did not agree on a head within {timeout:.0f}s ({last})")

    def _agreed(self, chosen: Sequence[int]) -> int | None:
        peers = [int(self.rpc(i, "net_peerCount"), 16) for i in chosen]
        if len(chosen) > 1 and min(peers) < len(chosen) - 1:
            return None
        heads = [self.client(i).block_number() for i in chosen]
        height = min(heads)
        if height < 1:
            return None
        hashes = {self.rpc(i, "eth_getBlockByNumber", [hex(height), False])["hash"] for i in chosen}
        return height if len(hashes) == 1 else None

    def status(self) -> list[NodeStatus]:
        """Heads, peers, signers and who sealed the recent blocks, node by node (a dead node says so), with
        the institution's IPFS node and gateway where it has them."""
        out = []
        for i, node in enumerate(self.nodes):
            row = NodeStatus(
                node.name,
                node.url,
                node.signer,
                node.pid,
                node.running,
                ipfs=self._kubo_status(node.name),
                gateway=self._gateway_status(node.name),
            )
            if node.running:
                with contextlib.suppress(ChainUnavailable, NodeError):
                    head = self.rpc(i, "eth_getBlockByNumber", ["latest", False])
                    clique = self.rpc(i, "clique_status")
                    row = replace(
                        row,
                        head=int(head["number"], 16),
                        head_hash=head["hash"],
                        peers=int(self.rpc(i, "net_peerCount"), 16),
                        signers=list(self.rpc(i, "clique_getSigners")),
                        sealed={k.lower(): int(v) for k, v in clique.get("sealerActivity", {}).items()},
                    )
            out.append(row)
        return out

    def _gateway_status(self, name: str) -> GatewayStatus | None:
        """The institution's gateway, if it runs one (``/healthz`` asked only of a running process)."""
        gw = next((g for g in self.gateways if g.name == name), None)
        if gw is None or not (self.serve_gateways or gw.running):
            return None
        running = gw.running
        return GatewayStatus(
            gw.member, gw.url, gw.pid, running, healthy(gw.url) if running else None, gw.ledger_mode, gw.store
        )

    def _kubo_status(self, name: str) -> KuboStatus | None:
        node = next((k for k in self.kubo if k.name == name), None)
        if node is None:
            return None
        if not node.running:
            return KuboStatus(node.name, node.api_url, node.peer_id, node.pid, False)
        try:
            peers: int | None = len(node.peers())
        except NodeError:
            peers = None
        return KuboStatus(node.name, node.api_url, node.peer_id, node.pid, True, peers)

    # ------------------------------------------------------------------ down, and a new validator

    def down(self) -> list[str]:
        """Stops every node by PID (data kept: ``up`` resumes it); returns the names of the validators
        stopped (their gateways, then their IPFS nodes, if any, are stopped first)."""
        for gw in self.gateways:
            if gw.running:
                self.say(f"stopping {gw.member} (pid {gw.pid})")
                gw.stop()
            gw.pid = None
        for kubo in self.kubo:
            if kubo.running:
                self.say(f"stopping the IPFS node of {kubo.name} (pid {kubo.pid})")
                kubo.stop()
            kubo.pid = None
        stopped = []
        for node in self.nodes:
            if node.running:
                self.say(f"stopping the validator of {node.name} (pid {node.pid})")
                node.stop()
                stopped.append(node.name)
            node.pid = None
        self._save()
        return stopped

    def add_validator(self, inst: Institution, *, timeout: float = 180.0) -> GethNode:
        """A new validator institution: onboarded by M-of-N governance, then voted in by the Clique signers.

        1. its keys (member account and release key, sealing key) are created beside the others;
        2. its node is initialised from the same genesis, peered with every validator, started and synced;
        3. the admins enact ``AddMember`` (threshold approvals) unless it is a member already;
        4. every running signer proposes it (``clique_propose``) until all nodes list it as a signer;
        5. on a network with IPFS, it gets its Kubo node in the swarm too.
        """
        geth = find_geth()
        consortium = self._consortium()
        if any(n.name == inst.name for n in self.nodes):
            raise DeploymentError(f"{inst.name} already runs a validator")
        inst = replace(inst, validator=True)
        grown = replace(consortium, institutions=(*consortium.institutions, inst))
        grown.check()
        keys = self._keys(grown)
        node = self._new_node(inst, keys)
        node.datadir.mkdir(parents=True, exist_ok=True)
        node.init(geth, self.folder / "genesis.json")
        self.nodes.append(node)
        self.consortium = grown
        for other in self.nodes:  # static peers for the next restart; _peer_and_seal connects them now
            other.write_peers([n.enode for n in self.nodes])
        self.say(f"starting the validator of {inst.name}")
        node.start(geth, chain_id=self.chain_id, password_file=self.password_file)
        self._save()
        self._peer_and_seal(timeout=timeout)
        self.wait_agreement(timeout=timeout)
        self._onboard(inst, keys, grown)
        self._vote_in(node.signer, timeout=timeout)
        if self.kubo:
            self._swarm_up(find_kubo(), timeout=timeout)
        return node

    def _consortium(self) -> Consortium:
        if self.consortium is None:
            raise DeploymentError(f"no network in {self.folder}: run `hcl network up` first")
        return self.consortium

    def _onboard(self, inst: Institution, keys: Keys, consortium: Consortium) -> None:
        if self.manifest_path is None:
            raise DeploymentError("the network has no deployment yet: run `hcl network up` first")
        ledger = Manifest.load(self.manifest_path).connect(self.client())
        spec = next(m for m in keys.members if m.name == inst.name)
        if ledger.members.active_roles(spec.address) & int(Role(inst.roles)):
            return
        self.say(f"governance: {consortium.threshold} admins enact AddMember for {inst.name}")
        ledger.members.enact(
            keys.admins[: consortium.threshold],
            Action.ADD_MEMBER,
            spec.address,
            arg=spec.roles,
            encryption_key=spec.encryption_key,
            metadata_hash=spec.metadata_hash,
        )

    def _vote_in(self, signer: str, *, timeout: float) -> None:
        """Each running signer votes for ``signer`` until a majority made it one on every node."""
        voters = [i for i, n in enumerate(self.nodes) if n.running and n.signer != signer]
        self.say(f"clique: {len(voters)} signers vote {signer} in")
        for i in voters:
            self.rpc(i, "clique_propose", [signer, True])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lists = [
                {s.lower() for s in self.rpc(i, "clique_getSigners")} for i, n in enumerate(self.nodes) if n.running
            ]
            if all(signer.lower() in signers for signers in lists):
                for i in voters:
                    self.rpc(i, "clique_discard", [signer])
                return
            time.sleep(0.5)
        raise NodeError(f"the signers did not vote {signer} in within {timeout:.0f}s")

    # ------------------------------------------------------------------ state file

    def _save(self) -> None:
        state = {
            "consortium": self.consortium.to_json() if self.consortium else None,
            "manifest": str(self.manifest_path) if self.manifest_path else None,
            "nodes": [n.to_json() for n in self.nodes],
            "kubo": [k.to_json() for k in self.kubo],
            "gateways": [g.to_json() for g in self.gateways],
            "serve_gateways": self.serve_gateways,
        }
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self._state_file)

    def _load(self) -> None:
        state = json.loads(self._state_file.read_text())
        self.consortium = Consortium.from_json(state["consortium"])
        self.manifest_path = Path(state["manifest"]) if state.get("manifest") else None
        self.nodes = [GethNode.from_json(n) for n in state["nodes"]]
        self.kubo = [KuboNode.from_json(k) for k in state.get("kubo", [])]
        self.gateways = [GatewayProcess.from_json(g) for g in state.get("gateways", [])]
        self.serve_gateways = bool(state.get("serve_gateways", False))
