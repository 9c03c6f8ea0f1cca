"""The HealthCode Ledger demo: seed a dev network, then play the "health code" scenario over the real API.

    ./scripts/up      # starts chain + gateway, then seeds: county hospital through governance, demo
                      # patients, their FHIR records (= python -m demo seed)
    ./scripts/demo    # the scenario, narrated step by step (= python -m demo run; exit 1 at the first surprise)

Both talk to a running gateway and chain, as ``./scripts/up`` starts them (``hcl deploy --dev``); they find
them through the state file ``up`` writes (:data:`STATE_FILE`), so no option is needed after ``up``. On a
network with the institutions' own gateways (``./scripts/up --network N``) each institution signs in at its
own gateway (``gateways``: institution name → URL, from the state file) and everyone else — the patients,
Lakeside County Hospital — at the regional one (``url``). Every
key is one of Hardhat's PUBLIC dev keys (the mnemonic "test test ... junk"): the demo refuses any chain
but a dev deployment (its manifest says ``dev: true``), and the keystores it writes use the password "demo". Never for real data.

The scenario: Wang, a patient of City First People's Hospital (the tertiary hospital) with a diabetes
work-up, creates a health code — an EIP-712 signed consent — for Riverside Community Health Centre, which
then finds and reads exactly what it needs (discharge summary, medications, latest HbA1c) instead of
repeating tests. Lakeside County Hospital's emergency department breaks the glass for an allergy lookup;
Wang sees every read in the access log, each checked, revokes the centre's consent, the centre is refused,
and the log is checked against the chain. With institution gateways, Wang's records are held where they
were made — the lab results by the Regional Clinical Laboratory, the allergies by the centre, the rest by
the hospital — and every read crosses institutions through the reader's own gateway.

``seed`` and ``run`` are plain functions too (the tests call them); they raise :class:`DemoError` on
anything unexpected, which the command line prints and turns into exit code 1.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from node_client import signing
from node_client._client import ChainClient
from node_client._exceptions import ContractRevert, GatewayProblem, GatewayUnavailable, NodeClientError
from node_client.blinding import category_key, sign_category_key
from node_client.commitments import new_salt, reason_commitment
from node_client.contracts import Action, ConsentStatus, MemberStatus, ProposalStatus
from node_client.deploy import Ledger, Manifest, MemberSpec, dev_encryption_key
from node_client.gateway_client import GatewayClient
from node_client.keys import dev_account, keystore_address, load_keystore, new_keystore, write_x25519_jwk
from node_client.vocabulary import CATEGORIES, PURPOSES, Role, parse_categories, parse_purposes

__all__ = ["STATE_FILE", "DemoError", "RunResult", "SeedResult", "app", "endpoints", "run", "seed"]

# ---------------------------------------------------------------- the cast (dev accounts)

ADMIN_A, ADMIN_B = 0, 1  # two of the three dev admins (threshold 2)
HOSPITAL = 4  # City First People's Hospital: tertiary hospital, HOSPITAL | EMERGENCY
CLINIC = 5  # Riverside Community Health Centre
LAB = 6  # Regional Clinical Laboratory
COUNTY = 19  # Lakeside County Hospital, onboarded by `seed` through governance; its ED breaks the glass
COUNTY_NAME = "Lakeside County Hospital"
COUNTY_NAME_ZH = "湖滨县人民医院"
COUNTY_ROLES = Role.HOSPITAL | Role.EMERGENCY

PASSWORD = "demo"  # the demo keystores' password: a demo, never a real password

DEV_KEYS_NOTE = (
    'Dev keys only: every key here is one of Hardhat\'s PUBLIC test keys (mnemonic "test test ... junk"), '
    'known to everyone; demo keystores use the password "demo". Never use them for real data.'
)

#: the FHIR corpus shipped with the repository (provenance and licences: samples/fhir/SOURCES.md)
DEFAULT_SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "fhir"


@dataclass(frozen=True)
class DemoPatient:
    key: str  # short name used for files
    name: str
    account: int
    bundle: str  # file under synthea/
    about: str
    guardian: int | None = None


#: Wang: Synthea's patient-1 is the best fit in the sample corpus for "hypertension and diabetes": no
#: bundle there has both diagnoses (none has hypertension at all); patient-1 has Prediabetes, two HbA1c
#: results (LOINC 4548-4), an active diabetes self-management care plan, medications and allergies (which
#: steps 4 and 5 need). patient-2 has no medications or allergies; patient-3 is the paediatric one.
PATIENTS: tuple[DemoPatient, ...] = (
    DemoPatient(
        "wang",
        "Wang",
        10,
        "patient-1-Emmie273_Kovacek682.json",
        "discharged from the tertiary hospital; diabetes work-up (prediabetes, HbA1c follow-up)",
    ),
    DemoPatient("li", "Li", 11, "patient-2-7b4cf3d5.json", "adult patient of the tertiary hospital"),
    DemoPatient(
        "zhang", "Zhang", 12, "patient-3-cc3bf71c.json", "a child; a parent is the on-chain guardian", guardian=16
    ),
)
WANG = PATIENTS[0]

#: Institutions' keystores for the portal (file, who, dev account) and their release-decryption keys.
INSTITUTION_KEYS: tuple[tuple[str, str, int], ...] = (
    ("hospital.json", "City First People's Hospital (institution, dev account 4)", HOSPITAL),
    ("clinic.json", "Riverside Community Health Centre (institution, dev account 5)", CLINIC),
    ("auditor.json", "Provincial Health Data Audit Office (auditor, dev account 8)", 8),
)
RELEASE_KEYS: tuple[tuple[str, int], ...] = (("hospital.x25519.jwk", HOSPITAL), ("clinic.x25519.jwk", CLINIC))

HBA1C = "4548-4"  # LOINC Hemoglobin A1c/Hemoglobin.total in Blood
GRANT_CATEGORIES = "encounters,medications,lab-results,conditions"
GRANT_NETWORK = GRANT_CATEGORIES + ",allergies"  # with institution gateways the centre holds the allergies
GRANT_PURPOSES = "treatment,care-coordination"
GRANT_DAYS = 30
REVOKE_WITHIN = 10.0  # seconds: one block plus one poll, with room for a loaded machine
EMERGENCY_REASON = "Patient brought in unresponsive to the emergency department; allergy check before giving drugs"


class DemoError(Exception):
    """Something the demo did not expect: the message says what and what to do."""


@dataclass
class SeedResult:
    county_hospital: str
    onboarded_now: bool
    keystores_written: list[str] = field(default_factory=list)
    uploaded: dict[str, str] = field(default_factory=dict)  # patient name -> tx hash of this seed's upload
    skipped: list[str] = field(default_factory=list)  # patients who already had records
    seconds: float = 0.0


@dataclass
class RunResult:
    ok: bool
    consent_id: str
    access_ids: list[str]
    log_entries: int
    chain_events: int
    seconds: float = 0.0


# ---------------------------------------------------------------- small helpers


def _when(ts: int | float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d %H:%M UTC")


def _short(h: str | None) -> str:
    if not h:
        return "-"
    return h if len(h) <= 20 else f"{h[:10]}…{h[-8:]}"


def _slugs(mask: int, terms: tuple[Any, ...]) -> list[str]:
    return [t.slug for t in terms if mask >> t.bit & 1]


def _term(slug: str, terms: tuple[Any, ...]) -> Any:
    return next(t for t in terms if t.slug == slug)


@contextmanager
def _asking(action: str) -> Iterator[None]:
    """The gateway's refusal of ``action`` as a DemoError saying what was refused and why."""
    try:
        yield
    except GatewayProblem as exc:
        raise DemoError(
            f"{action}: the gateway answered {exc.status} ({exc.code}: {exc.detail or exc.title})"
        ) from None


def _resources(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    if bundle.get("resourceType") == resource_type:
        return [bundle]
    return [
        e["resource"] for e in bundle.get("entry", []) if e.get("resource", {}).get("resourceType") == resource_type
    ]


def _concept(cc: dict[str, Any] | None) -> str:
    if not cc:
        return "?"
    if cc.get("text"):
        return str(cc["text"])
    for coding in cc.get("coding", []):
        if coding.get("display"):
            return str(coding["display"])
    return "?"


def _has_code(resource: dict[str, Any], code: str) -> bool:
    return any(c.get("code") == code for c in resource.get("code", {}).get("coding", []))


def _atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temp file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- the session: gateway + chain


class Session:
    """One demo session: a gateway client per signed-in account, the chain, the deployment.

    ``gateways`` (institution name → URL): the institutions' own gateways; an account of one of them signs
    in there, every other account (patients, institutions without a gateway) at ``url``.
    """

    def __init__(
        self, url: str, manifest: Path, rpc_url: str, console: Console, gateways: dict[str, str] | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.manifest_path = Path(manifest)
        self.rpc_url = rpc_url
        self.out = console
        self._clients: dict[tuple[str, str], GatewayClient] = {}
        self.gw = GatewayClient(self.url, timeout=60)
        self.gateways = {name: u.rstrip("/") for name, u in (gateways or {}).items()}
        self.probes = {self.url: self.gw} | {u: GatewayClient(u, timeout=60) for u in self.gateways.values()}
        for u, probe in self.probes.items():
            _check_gateway(probe, u)
        try:
            self.manifest = Manifest.load(self.manifest_path)
        except NodeClientError as exc:
            raise DemoError(f"{exc} (start ./scripts/up first, or pass --manifest)") from None
        self.client = ChainClient(rpc_url=rpc_url, timeout=30)
        if not self.manifest.dev:
            raise DemoError(
                f"{self.manifest_path} is not a dev deployment: the demo signs with public dev keys and runs "
                "only where the manifest says dev: true (./scripts/up, or ./scripts/up --network N)"
            )
        try:
            self.client.block_number()
        except NodeClientError:
            raise DemoError(
                f"the chain at {rpc_url} does not answer: start ./scripts/up first, or pass --rpc-url"
            ) from None
        try:
            self.ledger: Ledger = self.manifest.connect(self.client)
        except NodeClientError as exc:
            raise DemoError(f"{exc}") from None
        self.member_names = {m["address"]: m["name"] for m in self.manifest.members}
        unknown = set(self.gateways) - set(self.member_names.values())
        if unknown:
            raise DemoError(f"gateways of {sorted(unknown)} are given, but {self.manifest_path} has no such member")
        self.names = dict(self.member_names)
        self.names.update({dev_account(p.account).address: p.name for p in PATIENTS})

    @property
    def federated(self) -> bool:
        """Whether the institutions have gateways of their own (``./scripts/up --network N``)."""
        return bool(self.gateways)

    def close(self) -> None:
        for c in [*self._clients.values(), *self.probes.values()]:
            c.close()

    def name(self, address: str | None) -> str:
        if not address:
            return "-"
        return self.names.get(address) or _short(address)

    def refresh_names(self) -> None:
        """Adds the names the gateway knows (from the manifest it loaded at start) that ours lacks."""
        with _asking("listing the members"):
            members = self.gw.members()
        for m in members:
            if m["name"]:
                self.names.setdefault(m["address"], m["name"])

    def url_of(self, address: str) -> str:
        """The gateway ``address`` uses: its institution's own (by its manifest name), else the regional one."""
        return self.gateways.get(self.member_names.get(address, ""), self.url)

    def login(self, account: LocalAccount, url: str | None = None) -> GatewayClient:
        """A gateway client signed in as ``account`` (Sign-In with Ethereum) at ``url`` (default: the
        gateway it uses, :meth:`url_of`), one per account and gateway."""
        where = (url or self.url_of(account.address)).rstrip("/")
        if (where, account.address) not in self._clients:
            gw = GatewayClient(where, timeout=120)
            with _asking(f"sign-in of {account.address} at {where}"):
                gw.sign_in(account)
            self._clients[(where, account.address)] = gw
        return self._clients[(where, account.address)]

    def wait_indexed(self, block: int | None = None, timeout: float = 30.0) -> None:
        """Waits until every gateway's read model (its chain indexer) has seen ``block`` (default: the head);
        on a Clique network that is the confirmed head, so a grant in ``block`` counts everywhere after it."""
        target = self.client.block_number() if block is None else block
        deadline = time.monotonic() + timeout
        for url, probe in self.probes.items():
            while True:
                checks = probe.health()["checks"]
                indexed = checks["indexer"]["indexedBlock"]
                if indexed >= target:
                    break
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"the gateway at {url} has indexed block {indexed}, the chain at {self.rpc_url} is at "
                        f"{target} after {timeout:.0f}s: is it following this chain? ({checks['indexer'].get('error')})"
                    )
                time.sleep(0.1)

    def chain_now(self) -> int:
        return self.client.block_timestamp()


def _check_gateway(gw: GatewayClient, url: str) -> None:
    try:
        health = gw.health()
    except GatewayUnavailable as exc:
        raise DemoError(f"{exc}: start ./scripts/up first (in another terminal), or pass --url") from None
    except GatewayProblem as exc:
        raise DemoError(f"{url}/healthz is not a HealthCode Ledger gateway (HTTP {exc.status})") from None
    if not isinstance(health.get("checks"), dict):
        raise DemoError(f"{url}/healthz is not a HealthCode Ledger gateway (no checks)")
    if health.get("status") != "ok":
        raise DemoError(f"the gateway at {url} is degraded: {health['checks']}")


@contextmanager
def _session(
    url: str, manifest: Path, rpc_url: str, console: Console, gateways: dict[str, str] | None = None
) -> Iterator[Session]:
    s = Session(url, manifest, rpc_url, console, gateways)
    try:
        yield s
    finally:
        s.close()


def _console(console: Console | None) -> Console:
    return console or Console()


def _step(out: Console, n: int | str, title: str, why: str) -> None:
    out.print()
    out.rule(f"[bold]Step {n}. {title}", align="left")
    out.print(f"[italic]{why}[/italic]")


def _ok(out: Console, text: str) -> None:
    out.print(f"[green]✔[/green] {text}")


# ---------------------------------------------------------------- seed


def _onboard_county_hospital(s: Session) -> tuple[str, bool]:
    """Seed step: the county hospital becomes a member by 2-of-3 governance; (address, onboarded now)."""
    out = s.out
    members = s.ledger.members
    county = dev_account(COUNTY)
    _, public = dev_encryption_key(COUNTY)
    spec = MemberSpec(
        county.address, int(COUNTY_ROLES), public, COUNTY_NAME, "hospital", name_zh=COUNTY_NAME_ZH, name_en=COUNTY_NAME
    )
    out.print()
    out.rule(f"[bold]Onboarding {COUNTY_NAME} through governance", align="left")
    out.print(
        "[italic]No single key can add an institution: the MemberRegistry needs an M-of-N approval of the "
        "consortium's admins (here 2 of 3). Admin 0 proposes, admin 1 approves, then it is executed.[/italic]"
    )
    current = members.member_of(county.address)
    if current.status is MemberStatus.ACTIVE:
        _ok(out, f"{COUNTY_NAME} ({county.address}) is already an active member (onboarded by an earlier seed)")
        _record_in_manifest(s, spec)
        return county.address, False
    if current.status is not MemberStatus.NONE:
        raise DemoError(
            f"{COUNTY_NAME} ({county.address}) is {current.status.name.lower()} on this network; "
            "the demo onboards only a new member (redeploy with ./scripts/up)"
        )
    _require_dev_admins(s)
    threshold = members.governance().threshold
    proposal_id = _pending_proposal(s, spec)
    if proposal_id is None:
        proposal_id = _propose_county(s, spec, threshold)
    if members.proposal_of(proposal_id).approvals < threshold:
        _one_admin_is_not_enough(s, proposal_id)
        _second_admin_approves(s, proposal_id, threshold)
    tx = members.execute(dev_account(ADMIN_B), proposal_id)
    out.print(f"  4. admin 1 executes proposal #{proposal_id} → tx {tx.tx_hash}")
    m = members.member_of(county.address)
    if m.status is not MemberStatus.ACTIVE or m.roles != spec.roles or m.encryption_key != public:
        raise DemoError(f"after execution {COUNTY_NAME} is {m.status.name}, roles {m.roles:#x}: not onboarded")
    _ok(out, f"{COUNTY_NAME} is an active member (roles: hospital, emergency) from block {tx.block_number}")
    _record_in_manifest(s, spec)
    return county.address, True


def _require_dev_admins(s: Session) -> None:
    """The demo governs with dev accounts 0 and 1: they must be admins (a `hcl deploy --dev` deployment)."""
    for i in (ADMIN_A, ADMIN_B):
        if not s.ledger.members.is_admin(dev_account(i).address):
            raise DemoError(
                f"dev account {i} is not an admin of this deployment: it was not deployed with "
                "`hcl deploy --dev`; onboard with `hcl member propose/approve/execute` instead"
            )


def _pending_proposal(s: Session, spec: MemberSpec) -> int | None:
    """A proposal to add ``spec`` left pending by an interrupted earlier seed: reused rather than duplicated."""
    members, now = s.ledger.members, s.chain_now()
    for pid in range(members.proposal_count(), max(0, members.proposal_count() - 50), -1):
        p = members.proposal_of(pid)
        if (
            p.action is Action.ADD_MEMBER
            and p.target == spec.address
            and p.arg == spec.roles
            and p.status is ProposalStatus.PENDING
            and p.expires_at > now
            and p.encryption_key == spec.encryption_key
        ):
            s.out.print(f"  found pending proposal #{pid} from an earlier seed ({p.approvals} approval(s))")
            return pid
    return None


def _propose_county(s: Session, spec: MemberSpec, threshold: int) -> int:
    admin_a = dev_account(ADMIN_A)
    proposal_id, tx = s.ledger.members.propose(
        admin_a,
        Action.ADD_MEMBER,
        spec.address,
        arg=spec.roles,
        encryption_key=spec.encryption_key,
        metadata_hash=spec.metadata_hash,
    )
    s.out.print(
        f"  1. admin 0 ({_short(admin_a.address)}) proposes: add {COUNTY_NAME} {spec.address}, roles "
        f"hospital and emergency, X25519 key {spec.encryption_key.hex()[:16]}…, metadata hash {spec.metadata_hash.hex()[:16]}…"
    )
    s.out.print(f"     → proposal #{proposal_id}, 1 of {threshold} approvals, tx {tx.tx_hash}")
    return proposal_id


def _one_admin_is_not_enough(s: Session, proposal_id: int) -> None:
    """Admin 0 alone tries to execute: the contract must refuse (MemberRegistryNotEnoughApprovals)."""
    try:
        s.ledger.members.execute(dev_account(ADMIN_A), proposal_id)
    except ContractRevert as exc:
        if exc.error_name != "MemberRegistryNotEnoughApprovals":
            raise DemoError(f"executing with one approval failed for an unexpected reason: {exc}") from exc
        s.out.print(f"  2. admin 0 alone tries to execute → refused by the contract: [yellow]{exc}[/yellow]")
    else:
        raise DemoError("a single admin executed a membership proposal: M-of-N governance is broken")


def _second_admin_approves(s: Session, proposal_id: int, threshold: int) -> None:
    members, admin_b = s.ledger.members, dev_account(ADMIN_B)
    if members.has_approved(proposal_id, admin_b.address):
        return
    tx = members.approve(admin_b, proposal_id)
    approvals = members.proposal_of(proposal_id).approvals
    s.out.print(f"  3. admin 1 ({_short(admin_b.address)}) approves → {approvals} of {threshold}, tx {tx.tx_hash}")


def _record_in_manifest(s: Session, spec: MemberSpec) -> None:
    """Appends the new member's off-chain description to the manifest's ``members`` (atomically).

    Names stay off-chain (only their hash is on-chain); a running gateway re-reads the manifest while a
    member it saw added has no name (``gateway/ledger/member_names.py``), so the name shows without a restart.
    """
    path = s.manifest_path
    data = orjson.loads(path.read_bytes())
    members = data.setdefault("members", [])
    if any(to_checksum_address(m["address"]) == spec.address for m in members):
        return
    members.append(
        {
            **spec.metadata,  # exactly what is hashed, the localised names included
            "roles": spec.roles,
            "metadataHash": "0x" + spec.metadata_hash.hex(),
            "encryptionKey": "0x" + spec.encryption_key.hex(),
        }
    )
    _atomic_write(path, orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    s.names[spec.address] = spec.name
    s.out.print(f"  added {spec.name} to {path} (the running gateway picks the name up from there)")


def _keystores(s: Session, keys_dir: Path) -> list[str]:
    out = s.out
    out.print()
    out.rule("[bold]Demo patients' keys", align="left")
    out.print(
        "[italic]Each patient holds their own key (on a phone, in practice): encrypted keystores, scrypt, "
        f'mode 0600. Password "{PASSWORD}" — a demo.[/italic]'
    )
    wanted: list[tuple[str, str, int]] = []
    for p in PATIENTS:
        wanted.append((f"{p.key}.json", f"{p.name} (patient, dev account {p.account})", p.account))
        if p.guardian is not None:
            wanted.append(
                (f"{p.key}-guardian.json", f"{p.name}'s parent, the guardian (dev account {p.guardian})", p.guardian)
            )
    for filename, who, index in INSTITUTION_KEYS:
        wanted.append((filename, who, index))
    written = []
    table = Table("file", "who", "address", "")
    for filename, who, index in wanted:
        path = keys_dir / filename
        account = dev_account(index)
        if path.exists():
            try:
                held = keystore_address(path)
            except NodeClientError as exc:
                raise DemoError(f"{path} exists and is not a keystore ({exc}); refusing to overwrite it") from None
            if held != account.address:
                raise DemoError(f"{path} holds {held}, not {who} {account.address}; refusing to overwrite a key")
            table.add_row(str(path), who, account.address, "kept (exists)")
            continue
        new_keystore(path, PASSWORD, account=account)
        written.append(str(path))
        table.add_row(str(path), who, account.address, "[green]written[/green]")
    for filename, index in RELEASE_KEYS:
        path = keys_dir / filename
        if not path.exists():
            write_x25519_jwk(path, dev_encryption_key(index)[0])
            written.append(str(path))
            table.add_row(
                str(path), f"release-decryption key of dev account {index} (X25519 JWK)", "", "[green]written[/green]"
            )
    out.print(table)
    lines = [
        "HealthCode Ledger demo keys  --  DEMO ONLY",
        "",
        "These are encrypted keystores (Web3 Secret Storage v3, scrypt) of Hardhat's PUBLIC dev accounts",
        '(mnemonic "test test test test test test test test test test test junk"). Everyone knows these',
        "keys: never use them, or this password, for anything real.",
        "",
        f"Password of every file: {PASSWORD}",
        "",
    ]
    lines += [f"{f:<22} {who}  {dev_account(i).address}" for f, who, i in wanted]
    lines += ["", "Written by `python -m demo seed`; existing files are never overwritten.", ""]
    _atomic_write(keys_dir / "README.txt", "\n".join(lines).encode())
    return written


def _guardian(s: Session) -> None:
    out = s.out
    for p in PATIENTS:
        if p.guardian is None:
            continue
        child, parent = dev_account(p.account), dev_account(p.guardian)
        now = s.chain_now()
        until = s.ledger.consents.guardian_until(child.address, parent.address)
        if until > now + 30 * 86_400:
            _ok(out, f"{p.name}'s guardian {parent.address} is set on-chain until {_when(until)}")
            continue
        tx = s.ledger.consents.set_guardian(child, parent.address, now + 365 * 86_400)
        until = s.ledger.consents.guardian_until(child.address, parent.address)
        if until <= now:
            raise DemoError(f"setGuardian for {p.name} was mined but the guardian is not in force")
        _ok(
            out,
            f"{p.name} (a child) names a guardian, {parent.address}, until {_when(until)} "
            f"(ConsentRegistry.setGuardian signed by {p.name}'s key), tx {tx.tx_hash}",
        )


def _upload(s: Session, samples: Path, result: SeedResult) -> None:
    out = s.out
    out.print()
    out.rule("[bold]Uploading the patients' FHIR records", align="left")
    out.print(
        "[italic]Each provider posts the FHIR it made; the gateway validates it, groups it into one encrypted "
        "record per data category and registers their hashes on-chain in one transaction. No health data goes "
        "on-chain.[/italic]"
    )
    if s.federated:
        out.print(
            "[italic]Each institution uploads at its own gateway, which then holds the records (数据不出院): "
            "Wang's lab results at the laboratory's, Wang's allergies at the centre's, the rest — discharge "
            "summary, encounters, medications, conditions — and the other patients at the hospital's.[/italic]"
        )
    s.wait_indexed()
    table = Table("patient", "uploaded by, at", "records (resources) per category", "tx hash", "")
    for p in PATIENTS:
        _upload_patient(s, p, samples, result, table)
    out.print(table)
    s.wait_indexed()  # a second seed (or `run`) then sees these records


def _upload_patient(s: Session, p: DemoPatient, samples: Path, result: SeedResult, table: Table) -> None:
    """Uploads each part of ``p``'s bundle not uploaded yet (one row each); an earlier seed's parts are kept."""
    patient = dev_account(p.account)
    _hand_over_category_key(s, p, s.url)  # she signs in where she reads her records, as the portal does
    with _asking(f"listing {p.name}'s records"):
        mine = s.login(patient).my_records()
    path = samples / "synthea" / p.bundle
    if not path.is_file():
        raise DemoError(f"FHIR sample {path} is missing (pass --samples or set HCL_FHIR_SAMPLES)")
    txs = []
    for who, body in _parts(s, p, path.read_bytes()):
        uploader = dev_account(who)
        by = f"{s.name(uploader.address)}, {s.url_of(uploader.address)}"
        held = [r for r in mine if r["provider"] == uploader.address]
        if held:
            per_cat = Counter(r["category"] for r in held)
            cats = ", ".join(f"{c} {n}" for c, n in sorted(per_cat.items()))
            table.add_row(p.name, by, cats, "\n".join(sorted({r["txHash"] for r in held})), "already there")
            continue
        _hand_over_category_key(s, p, s.url_of(uploader.address))
        with _asking(f"uploading {p.name}'s records as {s.name(uploader.address)}"):
            up = s.login(uploader).upload(patient.address, body)
        if up["patient"] != patient.address or not up["records"]:
            raise DemoError(f"the upload for {p.name} returned no records for {patient.address}: {up}")
        cats = ", ".join(f"{r['category']} 1 ({r['resources']})" for r in up["records"])
        ignored = f"{len(up['ignored'])} non-clinical resources ignored"
        table.add_row(p.name, by, cats, up["txHash"], f"[green]uploaded[/green] ({ignored})")
        txs.append(up["txHash"])
    if txs:
        result.uploaded[p.name] = ", ".join(txs)
    else:
        result.skipped.append(p.name)


def _hand_over_category_key(s: Session, p: DemoPatient, where: str) -> None:
    """``p`` signs in to the gateway at ``where`` once and hands it her category key (her signed
    CategoryKeyRequest): without it that gateway files only her emergency-safe records and names her other
    slots ``slot-N``."""
    patient = dev_account(p.account)
    signature = sign_category_key(patient, s.ledger.consents.domain())
    with _asking(f"handing {p.name}'s category key to {where}"):
        learned = s.login(patient, where).enrol_category_key(patient.address, signature)["learned"]
    if learned:
        _ok(
            s.out,
            f"{p.name} signs in at {where} and hands over her category key: the gateway now knows which of "
            "her on-chain slots is which category (nobody reading the chain does)",
        )


def _parts(s: Session, p: DemoPatient, raw: bytes) -> list[tuple[int, bytes]]:
    """Who uploads what of ``p``'s bundle: the hospital all of it, but on a network with institution
    gateways Wang's bundle is split by who made each resource (:func:`_made_by`), each part a bundle of the
    same type (references across parts stay ``urn:uuid`` ones: FHIR validation does not resolve them)."""
    if not s.federated or p is not WANG:
        return [(HOSPITAL, raw)]
    bundle = orjson.loads(raw)
    parts: dict[int, list[Any]] = {HOSPITAL: [], LAB: [], CLINIC: []}
    for entry in bundle.get("entry", []):
        parts[_made_by(entry.get("resource", {}))].append(entry)
    return [(who, orjson.dumps({**bundle, "entry": entries})) for who, entries in parts.items() if entries]


def _made_by(resource: dict[str, Any]) -> int:
    """The institution that made a resource of Wang's: the lab its results (laboratory Observations and
    DiagnosticReports, Specimens), the centre the allergy list it keeps, the hospital everything else."""
    kind = resource.get("resourceType")
    if kind == "AllergyIntolerance":
        return CLINIC
    if kind == "Specimen":
        return LAB
    if kind in ("Observation", "DiagnosticReport"):
        codes = {c.get("code") for cc in resource.get("category") or [] for c in cc.get("coding", [])}
        if codes & {"laboratory", "LAB"}:
            return LAB
    return HOSPITAL


def seed(
    url: str = "http://127.0.0.1:8000",
    manifest: Path | str = Path("deployments/local.json"),
    rpc_url: str = "http://127.0.0.1:8545",
    keys_dir: Path | str = Path(".hcl/demo"),
    *,
    samples: Path | str | None = None,
    console: Console | None = None,
    gateways: dict[str, str] | None = None,
) -> SeedResult:
    """Seeds a dev network: county hospital via governance, demo keystores, guardian, FHIR uploads.

    ``gateways``: the institutions' own gateways (name → URL), where they sign in and upload. Idempotent:
    whatever is already there is kept (and said so).
    """
    out = _console(console)
    started = time.monotonic()
    samples_dir = Path(samples or os.environ.get("HCL_FHIR_SAMPLES") or DEFAULT_SAMPLES)
    out.print(Panel.fit(f"[bold]HealthCode Ledger demo: seeding[/bold]\n[yellow]{DEV_KEYS_NOTE}[/yellow]"))
    with _session(url, Path(manifest), rpc_url, out, gateways) as s:
        county, now_onboarded = _onboard_county_hospital(s)
        result = SeedResult(county_hospital=county, onboarded_now=now_onboarded)
        result.keystores_written = _keystores(s, Path(keys_dir))
        _guardian(s)
        _upload(s, samples_dir, result)
    result.seconds = time.monotonic() - started
    out.print(
        f"\n[bold green]seeded[/bold green] in {result.seconds:.1f} s; keys in {keys_dir} "
        f"(see {Path(keys_dir) / 'README.txt'}). Next: ./scripts/demo"
    )
    return result


# ---------------------------------------------------------------- run: the scenario


def _load_patient_key(keys_dir: Path, p: DemoPatient) -> LocalAccount:
    path = keys_dir / f"{p.key}.json"
    if not path.exists():
        raise DemoError(f"no keystore for {p.name} at {path}: start ./scripts/up first (it seeds), or pass --keys-dir")
    try:
        account = load_keystore(path, PASSWORD)
    except NodeClientError as exc:
        raise DemoError(str(exc)) from None
    return account


def _latest_record(records: list[dict[str, Any]], category: str) -> dict[str, Any]:
    for r in records:  # the gateway lists the newest first
        if r["category"] == category:
            return r
    raise DemoError(f"no {category} record is visible to the centre")


def _read(
    gw: GatewayClient, record_id: str, purpose: str, reader_index: int, what: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Releases ``record_id`` to the signed-in reader and opens it with the reader's X25519 key."""
    with _asking(f"reading {what}"):
        body = gw.release(record_id, purpose)
    if body["recordId"] != record_id or body["purpose"] != purpose:
        raise DemoError(f"the release of {what} is for {body['recordId']} / {body['purpose']}")
    if "encryption" in body and "resource" in body:
        raise DemoError("a release carried plaintext next to its ciphertext")
    private, _ = dev_encryption_key(reader_index)
    try:
        fhir = gw.open(body, private)
    except (NodeClientError, ValueError) as exc:
        raise DemoError(f"the release of {what} does not decrypt with the reader's key: {exc}") from exc
    return body, fhir


def _ledger_ref(body: dict[str, Any]) -> str:
    led = body["ledger"]
    if led["mode"] == "strict":
        return f"AccessLogged in tx {led['txHash']} (block {led['blockNumber']})"
    return f"journal entry #{led['journalIndex']} (anchored on-chain in a Merkle batch)"


@dataclass
class _Run:
    """What the scenario's steps share: the cast, what Wang signed, and what this run released."""

    s: Session
    wang: LocalAccount
    hospital: LocalAccount = field(default_factory=lambda: dev_account(HOSPITAL))
    clinic: LocalAccount = field(default_factory=lambda: dev_account(CLINIC))
    lab: LocalAccount = field(default_factory=lambda: dev_account(LAB))
    county: LocalAccount = field(default_factory=lambda: dev_account(COUNTY))
    records: list[dict[str, Any]] = field(default_factory=list)  # Wang's records (step 1)
    categories: int = 0  # what the health code grants (step 2)
    slots: int = 0  # the same, as Wang's slots on chain (her category key places them)
    purposes: int = 0
    consent_id: str = ""  # the consent the code became on-chain (step 3)
    lab_record: str = ""  # the record holding the latest HbA1c (step 4)
    read: dict[str, dict[str, Any]] = field(default_factory=dict)  # category → the record the centre read (4)
    window: dict[str, Any] = field(default_factory=dict)  # the emergency window (step 5)
    revoked_at: float = 0.0  # time.monotonic() when the revoke was confirmed (step 7)
    revoke_block: int = 0  # the block it was mined in
    access_ids: list[str] = field(default_factory=list)
    releases: list[dict[str, Any]] = field(default_factory=list)

    @property
    def out(self) -> Console:
        return self.s.out

    @property
    def me(self) -> GatewayClient:
        """Wang, signed in with their own key."""
        return self.s.login(self.wang)

    @property
    def centre(self) -> GatewayClient:
        """The centre, signed in at its own gateway (with institution gateways) or the regional one."""
        return self.s.login(self.clinic)

    @property
    def grant(self) -> str:
        """What Wang's health code grants: with institution gateways also the allergies the centre holds."""
        return GRANT_NETWORK if self.s.federated else GRANT_CATEGORIES

    @property
    def hospital_name(self) -> str:
        return self.s.name(self.hospital.address)

    @property
    def clinic_name(self) -> str:
        return self.s.name(self.clinic.address)

    def released(self, body: dict[str, Any]) -> None:
        self.access_ids.append(body["accessId"])
        self.releases.append(body)


def _cast(s: Session, keys_dir: Path) -> _Run:
    """Wang's key, and the institutions checked to be active members with the roles the story needs."""
    r = _Run(s, _load_patient_key(keys_dir, WANG))
    cast = ((r.hospital, Role.HOSPITAL), (r.clinic, Role.CLINIC), (r.county, COUNTY_ROLES))
    for acct, role in cast:
        m = s.ledger.members.member_of(acct.address)
        if m.status is not MemberStatus.ACTIVE or m.roles & role != role:
            raise DemoError(
                f"{s.name(acct.address)} is not an active {role!r} member of this deployment "
                "(start ./scripts/up: its seed onboards Lakeside County Hospital)"
            )
    s.out.print(f"Wang {r.wang.address} (keystore {keys_dir / 'wang.json'}), at the gateway {s.url}")
    for acct, _role in cast:
        where = s.url_of(acct.address)
        own = "its own gateway" if where != s.url else "the regional gateway"
        s.out.print(f"{s.name(acct.address)} {acct.address}, at {own} {where}")
    s.wait_indexed()
    return r


def _wang_lists_records(r: _Run) -> None:
    _step(
        r.out,
        1,
        f"Wang was discharged from {r.hospital_name}",
        "The hospital uploaded Wang's records at discharge. Wang signs in with their own key (Sign-In with "
        "Ethereum) and lists them: the gateway shows what is registered on-chain — categories and "
        "providers, never the content.",
    )
    with _asking("listing Wang's records"):
        r.records = r.me.my_records()
    if not r.records:
        raise DemoError("Wang has no records: start ./scripts/up first (it seeds)")
    if not any(rec["provider"] == r.hospital.address for rec in r.records):
        raise DemoError(f"none of Wang's records comes from {r.hospital_name}")
    if unnamed := sorted({rec["category"] for rec in r.records if rec["category"].startswith("slot-")}):
        raise DemoError(f"the gateway Wang signed in to names her slots {unnamed}: it does not hold her category key")
    if r.s.federated:
        r.out.print(
            "  Each institution keeps what it made, at its own gateway: the hospital the discharge records, "
            "the laboratory the lab results, the centre the allergies. The chain lists them all."
        )
    t = Table("category", "provider", "registered", "status", "tx hash")
    for rec in r.records:
        t.add_row(
            rec["category"],
            rec["providerName"] or r.s.name(rec["provider"]),
            _when(rec["registeredAt"]),
            rec["status"],
            _short(rec["txHash"]),
        )
    r.out.print(t)
    providers = sorted({r.s.name(rec["provider"]) for rec in r.records})
    _ok(
        r.out,
        f"{len(r.records)} records in {len({rec['category'] for rec in r.records})} categories, uploaded by "
        f"{', '.join(providers)}",
    )


def _wang_signs_a_health_code(r: _Run) -> dict[str, Any]:
    """Step 2; returns the signed payload the health code carries."""
    _step(
        r.out,
        2,
        f"Wang creates a health code for {r.clinic_name}",
        "For follow-up care close to home, Wang signs — on their own device, off-line — an EIP-712 "
        "ConsentGrant: only the categories the centre needs, only for treatment and care coordination, "
        f"for {GRANT_DAYS} days. The signed payload is what the health-code QR carries.",
    )
    consents = r.s.ledger.consents
    previous = consents.consent_of(r.wang.address, r.clinic.address)
    if previous.status is ConsentStatus.ACTIVE:
        r.out.print(
            f"  (an earlier consent {_short('0x' + previous.consent_id.hex())} to the centre is active: "
            "the new grant replaces it — one consent per patient and institution)"
        )
    elif previous.status is ConsentStatus.REVOKED:
        r.out.print(
            f"  (an earlier run's consent {_short('0x' + previous.consent_id.hex())} was revoked; "
            "the new grant replaces it)"
        )
    now = r.s.chain_now()
    domain = consents.domain()
    key_signature = sign_category_key(r.wang, domain)  # her wallet makes the same key every time
    r.categories, r.purposes = parse_categories(r.grant), parse_purposes(GRANT_PURPOSES)
    r.slots = category_key(domain, r.wang.address, key_signature).slots(r.categories)
    grant = consents.build_grant(
        r.wang.address, r.clinic.address, r.slots, r.purposes, now, now + GRANT_DAYS * 86_400, deadline=now + 3600
    )
    signed = signing.sign(r.wang, domain, grant)
    # the code carries her category key too: the centre's gateway learns it when the code is submitted
    payload: dict[str, Any] = {**signed.as_dict(), "categoryKey": "0x" + key_signature.hex()}
    r.out.print(
        Panel(
            _code_summary(r, grant, signed, domain, payload),
            title="Wang's health code, in plain language",
            expand=False,
        )
    )
    if signing.recover_signer(domain, grant, signed.signature) != r.wang.address:
        raise DemoError("the health code does not verify as Wang's signature")
    return payload


def _code_summary(r: _Run, grant: Any, signed: Any, domain: Any, payload: dict[str, Any]) -> Table:
    """The health code in plain language: who may read what, why, until when, signed by whom."""
    summary = Table.grid(padding=(0, 2))
    summary.add_row("who may read", f"{r.clinic_name} ({r.clinic.address})")
    summary.add_row(
        "what",
        "\n".join(f"{_term(c, CATEGORIES).en} ({_term(c, CATEGORIES).zh})" for c in _slugs(r.categories, CATEGORIES)),
    )
    summary.add_row(
        "on-chain slots",
        f"{', '.join(str(b) for b in range(16) if r.slots >> b & 1)} (Wang's keyed permutation: the chain "
        "does not say which category a slot is)",
    )
    summary.add_row(
        "why", ", ".join(f"{_term(p, PURPOSES).en} ({_term(p, PURPOSES).zh})" for p in _slugs(r.purposes, PURPOSES))
    )
    summary.add_row("from / until", f"{_when(grant.valid_from)} → {_when(grant.valid_until)}")
    summary.add_row(
        "signed by",
        f"Wang {signed.signer} (EIP-712, chain {domain.chain_id}, ConsentRegistry "
        f"{_short(domain.verifying_contract)}, nonce {grant.nonce})",
    )
    summary.add_row("submit before", _when(grant.deadline))
    size = len(orjson.dumps(payload))
    summary.add_row("health-code payload", f"{size} bytes of signed JSON (the QR rendering is another issue)")
    return summary


def _centre_submits_the_code(r: _Run, payload: dict[str, Any]) -> None:
    _step(
        r.out,
        3,
        "The centre submits the health code",
        "The centre scans the code and posts it to the gateway, which checks the signature and relays it "
        "to ConsentRegistry.grantBySig. The centre cannot change a single field: the chain re-verifies "
        "Wang's signature.",
    )
    with _asking("submitting Wang's health code"):
        granted = r.centre.submit_consent(payload)
    r.consent_id = granted["consentId"]
    onchain = r.s.ledger.consents.consent_of(r.wang.address, r.clinic.address)
    if (
        "0x" + onchain.consent_id.hex() != r.consent_id
        or onchain.status is not ConsentStatus.ACTIVE
        or onchain.categories != r.slots
        or onchain.purposes != r.purposes
    ):
        raise DemoError(f"the chain does not hold the consent the gateway reported: {onchain}")
    _ok(r.out, f"consent {r.consent_id} is active on-chain, tx {granted['txHash']} (block {granted['blockNumber']})")


def _centre_reads(r: _Run) -> None:
    _step(
        r.out,
        4,
        "The centre finds and reads what it needs",
        "Discovery lists only the categories Wang consented to. The centre looks for an existing HbA1c "
        f"(LOINC {HBA1C}) instead of repeating the test, then reads the discharge summary, the "
        "medications and that lab record. Each release is ledgered before it leaves (an on-chain AccessLogged "
        "event; in batch mode a journal entry anchored on-chain) and encrypted to the centre's own X25519 "
        "key (HPKE): nobody else can read it in transit."
        + (
            " The centre asks only its own gateway: discovery asks every institution's gateway, and a record "
            "another one holds is released by its holder — consent checked and ledgered there, sealed to the "
            "centre — and passed through unread."
            if r.s.federated
            else ""
        ),
    )
    r.s.wait_indexed()
    with _asking("discovering Wang's records"):
        found = r.centre.discover(r.wang.address, purpose="treatment")["records"]
    visible = {rec["category"] for rec in found}
    if not visible or not visible <= set(_slugs(r.categories, CATEGORIES)):
        raise DemoError(f"discovery showed categories {sorted(visible)}, consent covers {r.grant}")
    r.out.print(
        f"  discovery: {len(found)} records in {', '.join(sorted(visible))} "
        f"(not shown: Wang's other {len({rec['category'] for rec in r.records} - visible)} categories)"
    )
    lab = _find_hba1c(r)
    r.lab_record = lab["recordId"]
    wanted = [
        (_latest_record(found, "encounters"), "the discharge summary", r.hospital_name),
        (_latest_record(found, "medications"), "the medications", r.hospital_name),
        (lab, "the HbA1c lab record", r.s.name(r.lab.address)),
    ]
    if r.s.federated:
        wanted.append((_latest_record(found, "allergies"), "the allergies", r.clinic_name))
    t = Table("read", "held by", "summary (decrypted with the centre's key)", "ledgered as")
    for rec, what, maker in wanted:
        holder = _holder_of(r.s, rec, maker, what)
        body, fhir = _read(r.centre, rec["recordId"], "treatment", CLINIC, what)
        if body["emergency"] or body["consentId"] != r.consent_id or body["category"] != rec["category"]:
            raise DemoError(
                f"the release of {what} is not under consent {r.consent_id}: {body['consentId']}, "
                f"emergency={body['emergency']}, category={body['category']}"
            )
        r.released(body)
        r.read[rec["category"]] = rec
        t.add_row(what, holder, _summarise(rec["category"], fhir), _ledger_ref(body))
    r.out.print(t)
    _ok(r.out, f"{len(wanted)} releases, each under consent {_short(r.consent_id)}")


def _holder_of(s: Session, rec: dict[str, Any], maker: str, what: str) -> str:
    """The gateway holding ``rec`` (discovery names it); with institution gateways it must be the gateway of
    the institution that made the record, ``maker``, when that institution has one."""
    holder = rec.get("holderName") or s.name(rec.get("holder"))
    if maker in s.gateways and holder != f"{maker} gateway":
        raise DemoError(f"{what} is held by {holder}, not by {maker}'s gateway")
    return holder


def _find_hba1c(r: _Run) -> dict[str, Any]:
    """The record holding Wang's latest HbA1c, found by its LOINC code without reading any record."""
    with _asking("searching for HbA1c results"):
        hba1c = r.centre.discover(r.wang.address, code=HBA1C)["records"]
    hits = [(res["date"] or "", rec["recordId"]) for rec in hba1c for res in rec["resources"] if res["code"] == HBA1C]
    if not hits:
        raise DemoError(f"no HbA1c (LOINC {HBA1C}) result found for Wang")
    latest_date, lab_record = max(hits)
    r.out.print(
        f"  HbA1c search: {len(hits)} result(s) on file, latest {latest_date[:10]} in record "
        f"{_short(lab_record)} → no need to repeat the test"
    )
    return next(rec for rec in hba1c if rec["recordId"] == lab_record)


def _break_glass(r: _Run) -> None:
    county = r.s.name(r.county.address)
    _step(
        r.out,
        5,
        f"Break glass: {county}'s emergency department",
        f"Wang is brought in unresponsive at {county}, which has no consent and no gateway of its own: it "
        "uses the regional gateway. It opens an emergency window itself: it signs its own "
        "ConsentRegistry.emergencyAccess transaction (only emergency-safe categories; the reason stays "
        "off-chain, only a salted commitment to it goes on-chain, which no guess of the wording confirms) and "
        "the gateway relays it. Members without the EMERGENCY "
        "capability cannot do this. The allergy list is released by whichever gateway holds it.",
    )
    er = r.s.login(r.county)
    salt = new_salt()
    commitment = reason_commitment(EMERGENCY_REASON, salt)
    raw = _emergency_tx(r.s, r.county, r.wang.address, parse_categories("allergies"), commitment)
    with _asking("breaking the glass"):
        r.window = er.emergency_access(raw, EMERGENCY_REASON, salt)
    if r.window["patient"] != r.wang.address or r.window["categories"] != ["allergies"]:
        raise DemoError(f"the emergency window is not the one asked for: {r.window}")
    r.out.print(f'  reason: "{EMERGENCY_REASON}"')
    r.out.print(
        f"  emergency window {_short(r.window['accessId'])} for allergies until {_when(r.window['validUntil'])}, "
        f"tx {r.window['txHash']}"
    )
    r.s.wait_indexed()
    with _asking("emergency discovery of allergies"):
        ed_found = er.discover(r.wang.address, purpose="emergency", category="allergies")["records"]
    if not ed_found:
        raise DemoError("the emergency department sees no allergies record of Wang")
    holder = _holder_of(r.s, ed_found[0], r.clinic_name, "the allergies")
    body, fhir = _read(er, ed_found[0]["recordId"], "emergency", COUNTY, "the allergies")
    if body["emergency"] is not True:
        raise DemoError("the emergency release is not flagged as emergency")
    r.released(body)
    r.out.print(f"  [bold red]EMERGENCY[/bold red] release by {holder}: {_summarise('allergies', fhir)}")
    _ok(r.out, f"flagged emergency=true, {_ledger_ref(body)}, sealed to {county}'s key")


def _wang_sees_the_log(r: _Run) -> None:
    _step(
        r.out,
        6,
        "Wang sees who read what, when and why",
        "Wang's access log is derived from the ledger: every release, with the reader, the category, the "
        "purpose, the institution that released it, and its proof — which Wang's gateway checks against the "
        "chain itself (an AccessLogged event, or a journal entry under a Merkle root anchored on-chain). "
        "Emergency reads stand out.",
    )
    r.s.wait_indexed()
    log = _settled_log(r)
    t = Table("when (UTC)", "who", "read what, why", "held by", "checked", "proof")
    for a in log["accesses"]:
        if a["accessId"] not in r.access_ids:
            continue
        proof = a["ledger"].get("txHash") or f"journal #{a['ledger'].get('journalIndex')}"
        t.add_row(
            datetime.fromtimestamp(int(a["time"]), UTC).strftime("%H:%M:%S"),
            a["requesterName"] or r.s.name(a["requester"]),
            f"{a['category'] or '?'} for {a['purpose']}" + (" EMERGENCY" if a["emergency"] else ""),
            a.get("holderName") or r.s.name(a.get("holder")),
            f"✔ {a['verification']}",
            _short(proof),
            style="bold red" if a["emergency"] else None,
        )
    r.out.print(t)
    earlier = len(log["accesses"]) - len(r.access_ids)
    windows = [w for w in log["emergencyWindows"] if w["txHash"] == r.window["txHash"]]
    if not windows:
        raise DemoError("the emergency window is not in Wang's access log")
    for w in windows:
        r.out.print(
            f"  [bold red]emergency window[/bold red] opened by {w['memberName'] or r.s.name(w['member'])} "
            f"at {_when(w['openedAt'])} for {', '.join(w['categories'])}, until {_when(w['validUntil'])}, "
            f"tx {w['txHash']}"
        )
    _ok(
        r.out,
        f"{len(r.access_ids)} reads of this run listed, each verified against the chain"
        + (f" ({earlier} earlier entries, from earlier runs, not shown)" if earlier else ""),
    )


def _settled_log(r: _Run, timeout: float = 30.0) -> dict[str, Any]:
    """Wang's access log once every release of this run is in it and verified (a batch-mode entry is once
    its gateway has anchored a root over it, every few seconds); :class:`DemoError` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        with _asking("reading Wang's access log"):
            log = r.me.my_access_log()  # the newest page: its emergency windows and unavailable holders
            log["accesses"] = list(r.me.iter_access_log())  # every page
        by_id = {a["accessId"]: a for a in log["accesses"]}
        missing = [a for a in r.access_ids if a not in by_id]
        unproven = {a: by_id[a]["verification"] for a in r.access_ids if a in by_id and not by_id[a]["verified"]}
        if not missing and not unproven:
            return log
        if time.monotonic() > deadline:
            silent = [u.get("name") or u.get("gateway") for u in log.get("unavailable", [])]
            raise DemoError(
                f"after {timeout:.0f} s Wang's access log lacks this run's releases {missing} and does not verify "
                f"{unproven}" + (f"; gateways that did not answer: {silent}" if silent else "")
            )
        time.sleep(0.5)


def _wang_revokes(r: _Run) -> None:
    _step(
        r.out,
        7,
        "Wang revokes the centre's consent",
        "Follow-up done: Wang signs a ConsentRevoke (EIP-712) for the centre. It takes effect from the "
        "block it is mined in.",
    )
    consents = r.s.ledger.consents
    revoke = signing.sign(
        r.wang,
        consents.domain(),
        consents.build_revoke(r.wang.address, r.clinic.address, deadline=r.s.chain_now() + 3600),
    )
    with _asking("revoking the centre's consent"):
        revoked = r.me.revoke_consent(r.consent_id, revoke.as_dict())
    if revoked.get("revoked") is not True:
        raise DemoError(f"the revoke was not confirmed: {revoked}")
    r.revoked_at, r.revoke_block = time.monotonic(), int(revoked["blockNumber"])
    if consents.consent_of(r.wang.address, r.clinic.address).status is not ConsentStatus.REVOKED:
        raise DemoError("the chain still shows the consent as active after the revoke")
    _ok(r.out, f"consent {_short(r.consent_id)} revoked, tx {revoked['txHash']} (block {revoked['blockNumber']})")


def _centre_is_refused(r: _Run) -> None:
    _step(
        r.out,
        8,
        "The centre's next request is refused",
        "The centre tries to read the HbA1c record again. The gateway asks the chain, which says no; the "
        "refusal names the reason, as application/problem+json, and nothing is released or ledgered."
        + (
            " Every institution's gateway follows the chain on its own: the hospital's and the laboratory's "
            f"must refuse within one block plus one poll (checked here, up to {REVOKE_WITHIN:.0f} s), and the "
            "centre's own gateway forwards the request to the laboratory's, which refuses it."
            if r.s.federated
            else ""
        ),
    )
    if r.s.federated:
        _holder_refuses(r, r.hospital_name, r.read["encounters"])
        _holder_refuses(r, r.s.name(r.lab.address), r.read["lab-results"])
    refused, problem = _refusal(r.centre, r.lab_record)
    r.out.print(f"  HTTP {refused.status_code} {refused.headers.get('content-type', '')}")
    r.out.print_json(data=problem)
    _ok(r.out, "refused: consent_revoked")


def _holder_refuses(r: _Run, institution: str, rec: dict[str, Any]) -> None:
    """``institution``'s own gateway, asked directly by the centre, refuses ``rec`` once it has polled the
    revoke's block, which must be within :data:`REVOKE_WITHIN` of the revoke (its ``/healthz`` tells: the
    revocation is noted at the first poll that sees its block, before that block is confirmed)."""
    url = r.s.gateways.get(institution)
    if url is None:
        return
    probe = r.s.probes[url]
    while True:
        indexer = probe.health()["checks"]["indexer"]
        seen = time.monotonic() - r.revoked_at
        noted = indexer["headBlock"] >= r.revoke_block and indexer.get("pendingRestrictions", 0) > 0
        if noted or indexer["indexedBlock"] >= r.revoke_block:
            break
        if seen > REVOKE_WITHIN:
            raise DemoError(f"{institution}'s gateway has not seen the revoke's block {seen:.1f} s after it: {indexer}")
        time.sleep(0.05)
    _refusal(r.s.login(r.clinic, url), rec["recordId"])
    _ok(
        r.out,
        f"{institution}'s own gateway ({url}) saw the revoke {seen:.1f} s after it went through and refuses the "
        f"centre its {rec['category']} record: consent_revoked",
    )


def _refusal(gw: GatewayClient, record_id: str) -> tuple[Any, dict[str, Any]]:
    """The raw refusal of a release of ``record_id`` (to show it as it travels): a 403 problem+json,
    ``consent_revoked``; anything else is a :class:`DemoError`."""
    refused = gw.request("GET", f"/v1/records/{record_id}", params={"purpose": "treatment"})
    media = refused.headers.get("content-type", "")
    if refused.status_code != 403 or not media.startswith("application/problem+json"):
        raise DemoError(
            f"expected a 403 problem+json refusal from {gw.url}, got HTTP {refused.status_code} {media}: "
            f"{refused.text[:300]}"
        )
    problem: dict[str, Any] = refused.json()
    if problem.get("code") != "consent_revoked":
        raise DemoError(f"expected the refusal consent_revoked, got {problem.get('code')}: {problem}")
    return refused, problem


def _log_matches_chain(r: _Run) -> tuple[int, int]:
    """Step 9; returns (entries in Wang's access log, AccessLogged events for Wang on chain)."""
    _step(
        r.out,
        9,
        "The access log matches the chain",
        "Anyone with chain access (an auditor, Wang's own app) can check the gateway: Wang's access log "
        "must list exactly the AccessLogged events the AccessLedger emitted for Wang.",
    )
    return _compare_with_chain(r.s, r.me, r.wang.address, r.releases)


def run(
    url: str = "http://127.0.0.1:8000",
    manifest: Path | str = Path("deployments/local.json"),
    rpc_url: str = "http://127.0.0.1:8545",
    keys_dir: Path | str = Path(".hcl/demo"),
    *,
    console: Console | None = None,
    gateways: dict[str, str] | None = None,
) -> RunResult:
    """Plays the scenario; raises :class:`DemoError` at the first unexpected answer. Repeatable.

    ``gateways``: the institutions' own gateways (name → URL); each institution then asks its own."""
    out = _console(console)
    started = time.monotonic()
    out.print(Panel.fit(f"[bold]HealthCode Ledger demo: Wang's health code[/bold]\n[yellow]{DEV_KEYS_NOTE}[/yellow]"))
    with _session(url, Path(manifest), rpc_url, out, gateways) as s:
        s.refresh_names()
        r = _cast(s, Path(keys_dir))
        _wang_lists_records(r)  # 1
        code = _wang_signs_a_health_code(r)  # 2
        _centre_submits_the_code(r, code)  # 3
        _centre_reads(r)  # 4
        _break_glass(r)  # 5
        _wang_sees_the_log(r)  # 6
        _wang_revokes(r)  # 7
        _centre_is_refused(r)  # 8
        log_entries, chain_events = _log_matches_chain(r)  # 9
    seconds = time.monotonic() - started
    out.print(
        f"\n[bold green]demo complete[/bold green] in {seconds:.1f} s: consent {r.consent_id} granted, used, "
        "revoked; every read ledgered and visible to Wang."
    )
    return RunResult(True, r.consent_id, r.access_ids, log_entries, chain_events, seconds)


def _emergency_tx(s: Session, member: LocalAccount, patient: str, categories: int, reason_hash: bytes) -> str:
    """The member's own signed EIP-1559 ``emergencyAccess`` transaction (the gateway only relays it)."""
    w3 = s.client.w3
    fn = s.ledger.consents.contract.functions.emergencyAccess(patient, categories, reason_hash)
    try:
        gas = int(s.client.rpc(lambda: fn.estimate_gas({"from": member.address})) * 1.3)
    except ContractRevert as exc:
        raise DemoError(f"the chain would refuse the emergency access: {exc}") from exc
    latest = s.client.rpc(lambda: w3.eth.get_block("latest"))
    base = latest.get("baseFeePerGas")
    if base is None:
        raise DemoError("this chain has no EIP-1559 base fee; the gateway relays only typed (EIP-1559) transactions")
    tip = s.client.rpc(lambda: w3.eth.max_priority_fee)
    tx = s.client.rpc(
        lambda: fn.build_transaction(
            {
                "from": member.address,
                "chainId": s.client.chain_id,
                "nonce": w3.eth.get_transaction_count(member.address, "pending"),
                "gas": gas,
                "maxFeePerGas": 2 * int(base) + int(tip),
                "maxPriorityFeePerGas": int(tip),
            }
        )
    )
    return "0x" + bytes(member.sign_transaction(tx).raw_transaction).hex()


def _compare_with_chain(s: Session, me: GatewayClient, patient: str, releases: list[dict[str, Any]]) -> tuple[int, int]:
    out = s.out
    s.wait_indexed()
    with _asking("reading Wang's access log"):
        log = list(me.iter_access_log())
    strict = [a for a in log if a["ledger"]["mode"] == "strict"]
    batch = [a for a in log if a["ledger"]["mode"] == "batch"]
    events = [e for e in s.ledger.access.events(["AccessLogged"]) if e["patient"] == patient]

    def from_log(a: dict[str, Any]) -> tuple[Any, ...]:
        return (
            a["ledger"]["txHash"].lower(),
            a["accessId"],
            a["requester"],
            a["recordId"],
            a["purpose"],
            bool(a["emergency"]),
            a["consentId"],
        )

    def from_chain(e: Any) -> tuple[Any, ...]:
        return (
            e.tx_hash.lower(),
            "0x" + bytes(e["accessHash"]).hex(),
            e["requester"],
            "0x" + bytes(e["recordId"]).hex(),
            PURPOSES[int(e["purpose"])].slug,
            bool(e["emergency"]),
            "0x" + bytes(e["consentId"]).hex(),
        )

    gw, chain = Counter(map(from_log, strict)), Counter(map(from_chain, events))
    if gw != chain:
        only_gw, only_chain = gw - chain, chain - gw
        raise DemoError(
            f"MISMATCH: the gateway's log has {len(strict)} strict entries, the chain {len(events)} "
            f"AccessLogged events; only in the log: {list(only_gw)[:3]}; only on chain: "
            f"{list(only_chain)[:3]}"
        )
    emergencies = sum(1 for e in events if e["emergency"])
    if strict or events or not batch:
        _ok(
            out,
            f"[bold]match[/bold]: {len(strict)} entries in Wang's access log = {len(events)} AccessLogged events "
            f"on chain for Wang ({emergencies} emergency), same tx, access hash, reader, record, purpose, "
            "consent",
        )
    if batch:
        _anchors_cover(s, batch)
    this_run = [r["ledger"]["txHash"] for r in releases if r["ledger"]["mode"] == "strict"]
    if not set(h.lower() for h in this_run) <= {k[0] for k in chain}:
        raise DemoError("a release of this run has no AccessLogged event on chain")
    return len(log), len(events)


def _anchors_cover(s: Session, batch: list[dict[str, Any]]) -> None:
    """Batch mode: releases are journaled by the gateway holding the record and anchored as Merkle roots,
    not one event each; every entry must be under a tree that its own gateway anchored on chain (up to 30 s:
    anchoring runs every few seconds)."""
    top: dict[str, int] = {}
    for a in batch:
        holder = to_checksum_address(a["holder"])
        top[holder] = max(top.get(holder, -1), int(a["ledger"]["journalIndex"]))
    deadline = time.monotonic() + 30
    while True:
        anchors = list(s.ledger.access.events(["AccessBatchAnchored"]))
        size = {
            h: max((int(e["treeSize"]) for e in anchors if to_checksum_address(e["gateway"]) == h), default=0)
            for h in top
        }
        short = {s.name(h): i for h, i in top.items() if size[h] <= i}
        if not short:
            break
        if time.monotonic() > deadline:
            raise DemoError(f"journal entries not covered by their gateway's on-chain anchor after 30 s: {short}")
        time.sleep(0.5)
    _ok(
        s.out,
        f"{len(batch)} batch-mode entries are covered by the anchors their gateways put on chain: "
        + ", ".join(f"{s.name(h)} (tree size {size[h]})" for h in top),
    )


# ---------------------------------------------------------------- summaries of decrypted records


def _summarise(category: str, fhir: dict[str, Any]) -> str:
    try:
        if category == "encounters":
            encounters = _resources(fhir, "Encounter")
            if not encounters:
                return f"{len(fhir.get('entry', []))} resources, no Encounter"
            encounters.sort(key=lambda e: e.get("period", {}).get("start", ""))
            last = encounters[-1]
            kind = _concept((last.get("type") or [None])[0])
            where = last.get("serviceProvider", {}).get("display", "")
            return (
                f"{len(encounters)} encounters, {encounters[0].get('period', {}).get('start', '')[:10]} to "
                f"{last.get('period', {}).get('start', '')[:10]}; latest: {kind} "
                f"[{last.get('class', {}).get('code', '?')}]" + (f" at {where}" if where else "")
            )
        if category == "medications":
            meds = _resources(fhir, "MedicationRequest")
            meds.sort(key=lambda m: (m.get("status") != "active", m.get("authoredOn", "")))
            names = [
                f"{_concept(m.get('medicationCodeableConcept')) if m.get('medicationCodeableConcept') else m.get('medicationReference', {}).get('display', '?')} ({m.get('status', '?')})"
                for m in meds
            ]
            return f"{len(meds)} prescriptions: " + "; ".join(names)
        if category == "lab-results":
            obs = [o for o in _resources(fhir, "Observation") if _has_code(o, HBA1C)]
            if not obs:
                return f"{len(_resources(fhir, 'Observation'))} lab observations, no HbA1c"
            obs.sort(key=lambda o: o.get("effectiveDateTime", ""))
            parts = []
            for o in reversed(obs):
                q = o.get("valueQuantity", {})
                parts.append(
                    f"{float(q.get('value', 'nan')):.1f} {q.get('unit', '')} on {o.get('effectiveDateTime', '')[:10]}"
                )
            return f"HbA1c {parts[0]}" + (f" (earlier: {', '.join(parts[1:])})" if parts[1:] else "")
        if category == "allergies":
            allergies = _resources(fhir, "AllergyIntolerance")
            return f"{len(allergies)} allergies: " + ", ".join(
                f"{_concept(a.get('code'))} ({a.get('criticality', '?')})" for a in allergies
            )
    except (KeyError, TypeError, ValueError) as exc:
        return f"{len(fhir.get('entry', []))} resources (not summarised: {exc})"
    return f"{len(fhir.get('entry', []))} resources"


# ---------------------------------------------------------------- command line

app = typer.Typer(
    name="python -m demo",
    help=(
        "HealthCode Ledger demo: `seed` a dev network, then `run` the health-code scenario over the gateway's "
        "HTTP API. Assumes ./scripts/up is running in another terminal (a chain deployed with "
        "`hcl deploy --dev` and a gateway on --url). " + DEV_KEYS_NOTE
    ),
    no_args_is_help=True,
    add_completion=False,
)

#: written by ./scripts/up: where it started the chain and the gateway, so the demo needs no options
STATE_FILE = Path(".hcl/up.json")
DEFAULTS = {
    "url": "http://127.0.0.1:8000",
    "manifest": "deployments/local.json",
    "rpc_url": "http://127.0.0.1:8545",
    "keys_dir": ".hcl/demo",
}

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="the gateway's base URL (default: from .hcl/up.json, else http://127.0.0.1:8000)",
        show_default=False,
    ),
]
ManifestOpt = Annotated[
    Path | None,
    typer.Option(
        "--manifest", envvar="HCL_MANIFEST", show_default=False, help="deployment manifest (default: from .hcl/up.json)"
    ),
]
RpcOpt = Annotated[
    str | None,
    typer.Option(
        "--rpc-url",
        envvar="HCL_RPC_URL",
        show_default=False,
        help="JSON-RPC URL of the chain (default: from .hcl/up.json)",
    ),
]
KeysOpt = Annotated[
    Path | None,
    typer.Option(
        "--keys-dir",
        envvar="HCL_DEMO_KEYS_DIR",
        show_default=False,
        help='the demo keystores (password "demo") (default: from .hcl/up.json, else .hcl/demo)',
    ),
]


def endpoints(url: str | None, manifest: Path | None, rpc_url: str | None, keys_dir: Path | None) -> dict[str, Any]:
    """What to talk to: the options given, else what ./scripts/up recorded in :data:`STATE_FILE`, else defaults;
    ``gateways`` (institution name → URL, ``./scripts/up --network``) only from the state file."""
    state: dict[str, Any] = {}
    if STATE_FILE.is_file():
        try:
            state = orjson.loads(STATE_FILE.read_bytes())
        except orjson.JSONDecodeError:
            state = {}
    given = {"url": url, "manifest": manifest, "rpc_url": rpc_url, "keys_dir": keys_dir}
    out = {k: v if v is not None else state.get(k, DEFAULTS[k]) for k, v in given.items()}
    # the institutions' own gateways belong to the network up started: not to another --url's
    same = url is None or url.rstrip("/") == str(state.get("url", "")).rstrip("/")
    gateways = dict(state.get("gateways") or {}) if same else {}
    return {**out, "manifest": Path(out["manifest"]), "keys_dir": Path(out["keys_dir"]), "gateways": gateways}


def _cli(fn: Any, *args: Any, **kwargs: Any) -> None:
    err = Console(stderr=True)
    try:
        fn(*args, **kwargs)
    except DemoError as exc:
        err.print(f"[bold red]demo stopped:[/bold red] {exc}")
        raise typer.Exit(1) from None
    except GatewayUnavailable as exc:
        err.print(
            f"[bold red]demo stopped:[/bold red] the gateway stopped answering ({exc}); is ./scripts/up still running?"
        )
        raise typer.Exit(1) from None
    except NodeClientError as exc:
        err.print(f"[bold red]demo stopped:[/bold red] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None


@app.command("seed")
def seed_cmd(
    url: UrlOpt = None,
    manifest: ManifestOpt = None,
    rpc_url: RpcOpt = None,
    keys_dir: KeysOpt = None,
    samples: Annotated[
        Path | None,
        typer.Option(
            "--samples",
            envvar="HCL_FHIR_SAMPLES",
            help="FHIR sample corpus with a synthea/ folder (default: the repository's samples/fhir)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Seed the network: county hospital via governance, demo patients, their FHIR records.

    Onboards Lakeside County Hospital through 2-of-3 governance, writes the demo patients' encrypted keystores (password "demo"), sets the child's guardian on-chain and uploads the patients' FHIR records as City First People's Hospital (with the institutions' own gateways, ./scripts/up --network N: Wang's lab results as the laboratory and allergies as the centre, each at its own gateway). Safe to run again: keeps what exists. Needs ./scripts/up running in another terminal.
    """
    _cli(seed, **endpoints(url, manifest, rpc_url, keys_dir), samples=samples)


@app.command("run")
def run_cmd(
    url: UrlOpt = None,
    manifest: ManifestOpt = None,
    rpc_url: RpcOpt = None,
    keys_dir: KeysOpt = None,
) -> None:
    """Play the scenario, narrated step by step (run `seed` first; ./scripts/up does).

    Wang's records, Wang's health code for the community health centre, discovery and encrypted reads (across the institutions' gateways on a network), a county hospital's break-glass emergency read, Wang's verified access log, revocation, the refused request, and the access log checked against the chain. Exits 1 at the first unexpected answer. Repeatable on the same network. Needs ./scripts/up running in another terminal.
    """
    _cli(run, **endpoints(url, manifest, rpc_url, keys_dir))
