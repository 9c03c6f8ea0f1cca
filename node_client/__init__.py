"""HealthCode Ledger node client: compile, deploy and talk to the consent and access-ledger contracts.

Typical use::

    from node_client import ChainClient, Manifest

    client = ChainClient(rpc_url="http://127.0.0.1:8545")
    ledger = Manifest.load(Path("deployments/local.json")).connect(client)
    ledger.consents.check(patient, hospital, Category.LAB_RESULTS, Purpose.TREATMENT)
"""

from __future__ import annotations

from node_client._client import ChainClient, TxResult
from node_client.contracts import (
    AccessLedger,
    Action,
    CheckResult,
    Consent,
    ConsentRegistry,
    Member,
    MemberRegistry,
    Record,
    RecordInput,
    RecordRegistry,
)
from node_client.deploy import Ledger, Manifest, MemberSpec, deploy
from node_client.events import EventRecord, read_events
from node_client.vocabulary import Category, Purpose, Role

__version__ = "0.1.0"

__all__ = [
    "AccessLedger",
    "Action",
    "Category",
    "ChainClient",
    "CheckResult",
    "Consent",
    "ConsentRegistry",
    "EventRecord",
    "Ledger",
    "Manifest",
    "Member",
    "MemberRegistry",
    "MemberSpec",
    "Purpose",
    "Record",
    "RecordInput",
    "RecordRegistry",
    "Role",
    "TxResult",
    "__version__",
    "deploy",
    "read_events",
]
