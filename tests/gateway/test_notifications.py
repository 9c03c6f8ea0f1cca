"""Notifications end to end: ``since`` on the access log, the live event stream and signed webhooks, on a
real batch-mode gateway over HTTP (real chain, journal, SQLite outbox) and a real webhook receiver."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.storage import notifications
from gateway.storage.db import Database
from node_client.vocabulary import parse_purposes
from node_client.webhooks import WebhookSignatureError, verify_webhook
from tests.support.gateway_harness import (
    CLINIC,
    HOSPITAL,
    SAMPLES,
    RunningGateway,
    dev,
    restarted,
    running_gateway,
    slots_of,
)

PATIENT = 15
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("notify")
    with running_gateway(tmp, ledger_mode="batch", notify_poll=0.1, webhook_backoff=0.3, sse_heartbeat=0.5) as g:
        yield g


@pytest.fixture(scope="module")
def record(gw: RunningGateway) -> str:
    """An observation of the patient, uploaded by the hospital, which the clinic may read."""
    hospital = gw.login(dev(HOSPITAL))
    body = (SAMPLES / "hl7-r4" / "Observation-f001.json").read_bytes()
    up = hospital.post("/v1/records", params={"patient": dev(PATIENT).address}, content=body, headers=FHIR)
    assert up.status_code == 201, up.text
    rec = up.json()["records"][0]
    now = gw.client.block_timestamp()
    gw.ledger.consents.grant(
        dev(PATIENT),
        dev(CLINIC).address,
        gw.slots(dev(PATIENT), rec["category"]),
        parse_purposes("treatment"),
        now,
        now + 86_400,
    )
    gw.wait_indexed()
    return str(rec["recordId"])


def _read(gw: RunningGateway, record: str, times: int = 1) -> list[int]:
    clinic = gw.login(dev(CLINIC))
    out = []
    for _ in range(times):
        r = clinic.get(f"/v1/records/{record}", params={"purpose": "treatment"})
        assert r.status_code == 200, r.text
        out.append(r.json()["ledger"]["journalIndex"])
    return out


# ---------------------------------------------------------------- since


def test_since_returns_that_second_and_later_in_pages(gw: RunningGateway, record: str) -> None:
    _read(gw, record, 2)
    patient = gw.sign_in(dev(PATIENT))
    first = patient.my_access_log()
    latest = first["latest"]
    assert len(first["accesses"]) >= 2 and latest == first["accesses"][0]["time"]
    seen = {a["accessId"] for a in first["accesses"]}
    again = patient.my_access_log(since=latest)
    # nothing new: that second's entries again (the poller drops them), the same latest
    assert again["accesses"] and {a["accessId"] for a in again["accesses"]} <= seen and again["latest"] == latest
    time.sleep(1.05)  # a second later, so that second's entries are all new ones
    new = _read(gw, record, 3)
    later = int(time.time()) - 1
    page = patient.my_access_log(since=later, limit=2)
    assert len(page["accesses"]) == 2 and page["cursor"] and f"since={later}" in page["next"]
    rest = patient.my_access_log(since=later, limit=2, cursor=page["cursor"])
    paged = [a["ledger"]["journalIndex"] for a in page["accesses"] + rest["accesses"] if a["accessId"] not in seen]
    assert sorted(paged) == new and len(paged) == len(set(paged))  # newest first by (second, access id)
    polled = [a["ledger"]["journalIndex"] for a in patient.iter_access_log(since=latest) if a["accessId"] not in seen]
    assert sorted(polled) == new
    assert all(a["time"] >= latest for a in patient.iter_access_log(since=latest))
    assert patient.my_access_log(since=int(time.time()) + 60)["accesses"] == []


@pytest.mark.parametrize("since", ["yesterday", "1.5", "-1", str(1 << 40), "0x10"])
def test_a_bad_since_is_a_400_problem(gw: RunningGateway, since: str) -> None:
    r = gw.login(dev(PATIENT)).get("/v1/me/access-log", params={"since": since})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request", r.text
    assert "since" in r.text


# ---------------------------------------------------------------- live stream


class _Stream:
    """An SSE stream read by a thread: each event (or ``None`` for a comment line) into a queue."""

    def __init__(self, url: str, token: str, headers: dict[str, str] | None = None) -> None:
        self.items: queue.Queue[dict[str, Any] | str | None] = queue.Queue()
        self.client = httpx.Client(base_url=url, timeout=httpx.Timeout(30, read=30))
        self.headers = {"Authorization": f"Bearer {token}", **(headers or {})}
        self.status = 0
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "the stream did not open"

    def _run(self) -> None:
        try:
            with self.client.stream("GET", "/v1/me/access-events", headers=self.headers) as resp:
                self.status = resp.status_code
                self.content_type = resp.headers.get("content-type", "")
                self.opened.set()
                event: dict[str, Any] = {}
                for line in resp.iter_lines():
                    if line.startswith(":"):
                        self.items.put(line)
                    elif line.startswith(("id:", "event:", "data:")):
                        key, _, value = line.partition(": ")
                        event[key.rstrip(":")] = value
                    elif line == "" and event:
                        self.items.put(event)
                        event = {}
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()
            self.items.put(None)  # the stream ended

    def event(self, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            item = self.items.get(timeout=max(0.01, deadline - time.monotonic()))
            assert item is not None, "the stream ended"
            if isinstance(item, dict):
                return item

    def close(self) -> None:
        self.client.close()


def test_stream_pushes_each_new_access_and_resumes(gw: RunningGateway, record: str) -> None:
    token = gw.sign_in(dev(PATIENT)).token
    stream = _Stream(gw.url, token)
    try:
        assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
        (idx,) = _read(gw, record)
        e = stream.event()
        access = json.loads(e["data"])
        assert e["event"] == "access" and access["ledger"] == {"mode": "batch", "journalIndex": idx}
        assert access["requester"] == dev(CLINIC).address and access["patient"] == dev(PATIENT).address
        assert access["requesterName"] and access["purpose"] == "treatment" and access["emergency"] is False
        # idle: heartbeats (comments) keep it open
        deadline = time.monotonic() + 5
        while stream.items.get(timeout=5) != ": keep-alive":
            assert time.monotonic() < deadline
        # a reconnecting client names the last event it saw and is given what it missed
        _read(gw, record, 2)
        missed = _Stream(gw.url, token, {"Last-Event-ID": e["id"]})
        try:
            got = [json.loads(missed.event()["data"])["ledger"]["journalIndex"] for _ in range(2)]
            assert got == [idx + 1, idx + 2]
        finally:
            missed.close()
    finally:
        stream.close()
    # another patient's stream hears nothing of it; no token is a 401
    assert gw.http().get("/v1/me/access-events").status_code == 401


# ---------------------------------------------------------------- webhooks


class _Receiver:
    """A webhook receiver on a loopback port: records every delivery, answers 204."""

    def __init__(self, port: int = 0) -> None:
        got: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        self.got = got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                got.put((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _metric(gw: RunningGateway, outcome: str) -> float:
    text = gw.http().get("/metrics").text
    line = next(
        (x for x in text.splitlines() if x.startswith(f'hcl_webhook_deliveries_total{{outcome="{outcome}"}}')), ""
    )
    return float(line.split()[-1]) if line else 0.0


def test_webhook_registration_refuses_other_schemes_and_non_members(gw: RunningGateway) -> None:
    hospital = gw.login(dev(HOSPITAL))
    for url in ("ftp://127.0.0.1/x", "file:///etc/passwd", "javascript:alert(1)", "/relative"):
        r = hospital.post("/v1/webhooks", json={"url": url})
        assert r.status_code == 422 and r.json()["code"] == "invalid_webhook_url", r.text
    r = gw.login(dev(PATIENT)).post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x"})
    assert r.status_code == 403 and r.json()["code"] == "not_member"


def test_webhook_is_signed_retried_and_survives_a_restart(gw: RunningGateway, record: str, tmp_path: Path) -> None:
    receiver = _Receiver()
    hospital = gw.sign_in(dev(HOSPITAL))
    reg = hospital.http.post("/v1/webhooks", json={"url": receiver.url})
    assert reg.status_code == 201, reg.text
    secret = reg.json()["secret"]
    listed = hospital.http.get("/v1/webhooks").json()["webhooks"]
    assert [w["id"] for w in listed] == [reg.json()["id"]] and listed[0]["secret"] is None

    (idx,) = _read(gw, record)
    headers, body = receiver.got.get(timeout=10)
    webhook_id = verify_webhook(secret, headers, body)
    delivery = json.loads(body)
    assert delivery["id"] == webhook_id and delivery["type"] == "access.recorded"
    assert (
        delivery["access"]["ledger"]["journalIndex"] == idx and delivery["access"]["requester"] == dev(CLINIC).address
    )
    with pytest.raises(WebhookSignatureError):
        verify_webhook(secret, headers, body.replace(b"treatment", b"research"))
    with pytest.raises(WebhookSignatureError):  # replayed an hour later
        verify_webhook(secret, headers, body, now=time.time() + 3600)
    assert _metric(gw, "delivered") >= 1

    # the receiver goes away: the delivery fails, is retried, and stays pending in SQLite
    port = receiver.port
    receiver.stop()
    failed_before = _metric(gw, "failed")
    (idx,) = _read(gw, record)
    deadline = time.monotonic() + 10
    while _metric(gw, "failed") < failed_before + 2:  # the first try and at least one retry
        assert time.monotonic() < deadline, "no retries"
        time.sleep(0.2)
    pending = gw.components.db.read().execute("SELECT attempts FROM webhook_deliveries").fetchall()
    assert len(pending) == 1 and pending[0]["attempts"] >= 2

    # the gateway restarts (an open stream does not hold it up); the receiver is back: delivered once
    stream = _Stream(gw.url, gw.sign_in(dev(PATIENT)).token)
    with restarted(gw) as again:
        started = time.monotonic()
        stream.thread.join(timeout=10)
        assert not stream.thread.is_alive() and time.monotonic() - started < 10, "the old server kept the stream"
        receiver = _Receiver(port)
        try:
            headers, body = receiver.got.get(timeout=20)
            assert json.loads(body)["access"]["ledger"]["journalIndex"] == idx
            verify_webhook(secret, headers, body)
            deadline = time.monotonic() + 5
            while again.components.db.read().execute("SELECT COUNT(*) FROM webhook_deliveries").fetchone()[0]:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            gone = again.login(dev(HOSPITAL)).delete(f"/v1/webhooks/{reg.json()['id']}")
            assert gone.status_code == 200 and gone.json()["url"] == receiver.url
            assert again.login(dev(HOSPITAL)).get("/v1/webhooks").json()["webhooks"] == []
        finally:
            receiver.stop()
            stream.close()


def test_the_outbox_keeps_each_access_once_and_prunes_only_what_nobody_waits_for(tmp_path: Path) -> None:
    db = Database(tmp_path / "gateway.db")
    hospital, lab = dev(HOSPITAL).address, dev(CLINIC).address
    with db.write() as conn:
        notifications.add_subscription(conn, "wh_1", hospital, "http://127.0.0.1:9/hook", b"k" * 32)
        first = notifications.add_event(conn, b"\x01" * 32, "0xP", hospital, {"n": 1})
        again = notifications.add_event(conn, b"\x01" * 32, "0xP", hospital, {"n": 1})  # the feed re-reading
        other = notifications.add_event(conn, b"\x02" * 32, "0xP", lab, {"n": 2})  # no subscriber: no delivery
    assert first is not None and again is None and other is not None and other > first
    (pending,) = notifications.deliveries_due(db, time.time() + 1)
    assert pending.event.seq == first and pending.subscription.url.endswith("/hook") and pending.attempts == 0
    with db.write() as conn:
        assert notifications.prune(conn, time.time() + 60) == 1  # the one no delivery waits for
    assert [e.seq for e in notifications.events_after(db, 0)] == [first]
    with db.write() as conn:
        notifications.delivered(conn, pending)
        assert notifications.prune(conn, time.time() + 60) == 1
    assert notifications.events_after(db, 0) == [] and notifications.last_seq(db) == 0
    db.close()


# ---------------------------------------------------------------- several processes


@pytest.mark.slow
def test_with_two_workers_every_stream_hears_every_release_and_stop_does_not_hang(tmp_path: Path) -> None:
    """HCL_WORKERS=2: streams and releases land on either worker; the primary's feed sees every release
    in its journal and each worker's hub passes it on. SIGTERM with streams open still stops at once."""
    from tests.support.fault_harness import FaultChain, GatewayProcess
    from tests.system.test_faults import BUNDLE

    chain = FaultChain.start(tmp_path)
    gw = GatewayProcess(chain, tmp_path / "gw", mode="batch", workers=2).start()
    try:
        now = chain.client.block_timestamp()
        chain.ledger.consents.grant(
            dev(PATIENT),
            dev(CLINIC).address,
            slots_of(chain.ledger.consents.domain(), dev(PATIENT), "allergies,lab-results"),
            parse_purposes("treatment"),
            now,
            now + 86_400,
        )
        with gw.http(dev(HOSPITAL)) as hospital:  # the harness handed the patients' keys over at start
            up = hospital.post("/v1/records", params={"patient": dev(PATIENT).address}, content=BUNDLE, headers=FHIR)
            assert up.status_code == 201, up.text
        record = up.json()["records"][0]["recordId"]
        streams = [_Stream(gw.url, gw.token(dev(PATIENT))) for _ in range(4)]  # four connections: both workers
        released = set()
        for _ in range(6):
            with gw.http(dev(CLINIC)) as clinic:  # a fresh connection each: either worker serves it
                r = clinic.get(f"/v1/records/{record}", params={"purpose": "treatment"})
                assert r.status_code == 200, r.text
                released.add(r.json()["accessId"])
        for s in streams:
            assert {json.loads(s.event()["data"])["accessId"] for _ in released} == released
        started = time.monotonic()
        assert gw.stop() == 0
        assert time.monotonic() - started < 15
        for s in streams:
            s.thread.join(5)
            assert not s.thread.is_alive()
            s.close()
    finally:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.kill()
        chain.stop()
