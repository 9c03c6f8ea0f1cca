"""The demo end to end: ``seed`` (twice: idempotent) and ``run`` (twice: repeatable) against a real gateway
and chain, called as Python functions the way ``python -m demo`` calls them."""

from __future__ import annotations

import io
import stat
import time
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from demo import scenario as demo
from node_client.audit.fhir import iso_time, purpose_concept
from node_client.contracts import MemberStatus
from node_client.keys import keystore_address
from tests.support.gateway_harness import SAMPLES, RunningGateway, dev, running_gateway

pytestmark = pytest.mark.slow  # the whole demo against a real gateway and chain (~20 s)


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=160, force_terminal=False, color_system=None), buf


def test_seed_is_idempotent_and_run_plays_the_scenario(tmp_path: Path) -> None:
    keys = tmp_path / "demo-keys"
    with running_gateway(tmp_path, enrolled=False) as gw:  # the demo's patients hand over their keys
        common = {"url": gw.url, "manifest": gw.settings.manifest, "rpc_url": gw.settings.rpc_url, "keys_dir": keys}

        con, out = _console()
        t0 = time.monotonic()
        first = demo.seed(**common, samples=SAMPLES, console=con)
        seed_seconds = time.monotonic() - t0
        assert first.onboarded_now and set(first.uploaded) == {"Wang", "Li", "Zhang"}, out.getvalue()
        assert "MemberRegistryNotEnoughApprovals" in out.getvalue()  # one admin alone cannot onboard
        held = gw.components.category_keys
        assert all(held.get(dev(i).address) for i in (10, 11, 12))  # each patient handed hers over before her upload
        county = dev(demo.COUNTY).address
        assert gw.ledger.members.member_of(county).status is MemberStatus.ACTIVE
        manifest = orjson.loads(Path(gw.settings.manifest).read_bytes())
        assert [m["name"] for m in manifest["members"] if m["address"] == county] == [demo.COUNTY_NAME]
        for name, index in (("wang", 10), ("li", 11), ("zhang", 12), ("zhang-guardian", 16)):
            path = keys / f"{name}.json"
            assert keystore_address(path) == dev(index).address
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "password of every file: demo" in (keys / "README.txt").read_text().lower()
        assert gw.ledger.consents.guardian_until(dev(12).address, dev(16).address) > gw.client.block_timestamp()

        con, out = _console()
        again = demo.seed(**common, samples=SAMPLES, console=con)
        assert not again.onboarded_now and not again.uploaded and not again.keystores_written
        assert sorted(again.skipped) == ["Li", "Wang", "Zhang"], out.getvalue()
        assert len(manifest["members"]) == len(orjson.loads(Path(gw.settings.manifest).read_bytes())["members"])

        con, out = _console()
        t0 = time.monotonic()
        result = demo.run(**common, console=con)
        run_seconds = time.monotonic() - t0
        text = out.getvalue()
        assert result.ok and result.chain_events == result.log_entries == 4, text
        for n in range(1, 10):
            assert f"Step {n}." in text
        assert "consent_revoked" in text and "match" in text and "EMERGENCY" in text
        # the chain holds Wang's slots; what the demo prints names her categories (her gateway holds her key)
        assert "on-chain slots" in text and "Laboratory results" in text and "slot-" not in text
        granted = gw.ledger.consents.consent_of(dev(10).address, dev(demo.CLINIC).address).categories
        assert granted == gw.slots(dev(10), demo.GRANT_CATEGORIES)

        # repeatable on the same network: the re-grant replaces the revoked consent
        con, out = _console()
        second = demo.run(**common, console=con)
        assert second.ok and second.consent_id != result.consent_id, out.getvalue()
        assert second.chain_events == 8
        _consents_round_trip_as_fhir(gw)
        print(f"seed {seed_seconds:.1f} s, run {run_seconds:.1f} s")


def _consents_round_trip_as_fhir(gw: RunningGateway) -> None:
    """Every consent the demo granted reads back from ``/fhir/Consent`` as the same facts ``/v1/me/consents``
    gives (grantee, categories, purposes, period, state): the FHIR read API speaks for the demo's ledger."""
    seen = 0
    for patient in (10, 11, 12):
        http = gw.login(dev(patient))
        mine = http.get("/v1/me/consents").json()["consents"]
        bundle = http.get("/fhir/Consent", params={"patient": dev(patient).address}).json()
        fhir = {
            next(i["value"] for i in e["resource"]["identifier"] if i["system"] == "urn:hcl:consent-id"): e["resource"]
            for e in bundle.get("entry") or []
        }
        assert set(fhir) == {c["consentId"] for c in mine}, patient
        for c in mine:
            r = fhir[c["consentId"]]
            assert r["organization"][0]["identifier"]["value"] == c["grantee"]
            assert [x["code"] for x in r["provision"]["class"]] == c["categories"]
            expected = [purpose_concept(slug)["coding"][0]["code"] for slug in c["purposes"]]
            assert [x["code"] for x in r["provision"]["purpose"]] == expected
            assert (r["provision"]["period"]["start"], r["provision"]["period"]["end"]) == (
                iso_time(c["validFrom"]),
                iso_time(c["validUntil"]),
            )
            assert (r["status"] == "active") == (c["state"] == "active")
            seen += 1
    assert seen >= 1  # the demo's consent of Wang to the clinic (re-granted by the second run)


def test_run_without_seed_or_gateway_stops_with_a_clear_error(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(demo.DemoError, match=r"start \./scripts/up first"):
        demo.run(
            url="http://127.0.0.1:9",
            manifest=tmp_path / "none.json",
            rpc_url="http://127.0.0.1:9",
            keys_dir=tmp_path,
            console=_console()[0],
        )
