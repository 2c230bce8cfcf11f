"""oeagent publish / unenroll end to end against the real lab: BIND (signed), unbound, nginx.

DNS state is always read back from BIND itself (authoritative) or through unbound (AD bit),
never from oeagent's own account of what it did.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import shutil
import uuid
from pathlib import Path

import dns.name
import dns.rdatatype
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from lab import Lab
from lab.procs import free_ports
from oeagent import config as config_module
from oeagent import keyroll, keys, publish, wellknown_fetch
from oeagent.advertisement import parse_document, parse_txt
from oeagent.errors import DnsUpdateError
from oeagent.publish import advertise
from oeagent.state import StateDir
from tests.integration.publish_support import (
    authoritative,
    desired,
    enrolled,
    fresh_name,
    new_key,
    oeagent,
    our_records,
    send_update,
    settled_soa_serial,
    soa_serial,
    tlsa_pin,
    validated,
    wait_until,
)

pytestmark = pytest.mark.lab
BOTH = {"publish.backends": ["rfc2136", "wellknown"]}


def test_publish_dns_and_https_document_agree_and_validate(lab: Lab, tmp_path: Path) -> None:
    host = enrolled(lab, tmp_path)
    lab.start_nginx(host.fullchain, host.key, tmp_path / "www")
    try:
        path = host.reconfigure(BOTH)
        code, doc, err = oeagent(path, "publish")
        assert code == 0, (doc, err)
        assert all(check["ok"] for v in doc["verify"] for check in v["checks"])

        name = host.name
        secure, txt = validated(lab, f"_oe.{name}", "TXT")
        assert secure and len(txt) == 1
        signal = parse_txt(next(iter(txt)).strip('"'))
        pins = set()
        for port in (500, 4500):
            secure, tlsa = validated(lab, f"_{port}._udp.{name}", "TLSA")
            assert secure and all(v.startswith("3 1 1 ") for v in tlsa)
            pins |= {tlsa_pin(v) for v in tlsa}
        secure, ipseckeys = validated(lab, name, "IPSECKEY")
        assert secure and len(ipseckeys) == 1

        cert = x509.load_pem_x509_certificate(host.fullchain.read_bytes())
        public = cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert pins == {keys.spki_sha256(cert)}
        numbers = public.public_numbers()
        rdata = dns.rdata.from_text("IN", "IPSECKEY", next(iter(ipseckeys)))
        assert (rdata.precedence, rdata.gateway_type, rdata.algorithm) == (10, 0, 3)
        assert rdata.key == numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")

        # The document, over real TLS validated against Pebble's root, says the same.
        got = wellknown_fetch.get(name, "127.0.0.1", port=lab.info.https_port, timeout=10,
                                  context=wellknown_fetch.tls_context(lab.info.pebble_root_pem))
        assert got.status == 200 and got.content_type == "application/json"
        advert, expires = parse_document(got.body, name, dt.datetime.now(dt.UTC))
        assert advert.id == signal.id and advert.mode == signal.mode == "enforce"
        assert set(advert.pins) == pins and advert.auth == "ecdsa"
        assert expires == cert.not_valid_after_utc
        with pytest.raises(wellknown_fetch.FetchError, match="certificate rejected"):
            wellknown_fetch.get(name, "127.0.0.1", port=lab.info.https_port, timeout=10,
                                context=wellknown_fetch.tls_context(None))  # not a public root

        # Publishing again plans nothing and sends nothing.
        serial = soa_serial(lab)
        code, again, err = oeagent(path, "publish")
        assert code == 0, err
        assert [p["changes"] for p in again["plans"]] == [[], []]
        assert [a["changes"] for a in again["applied"]] == [0, 0]
        assert soa_serial(lab) == serial

        code, checked, err = oeagent(path, "publish", "--verify")
        assert code == 0 and all(v["ok"] for v in checked["verify"]), err
    finally:
        lab.stop_nginx()


def test_other_records_at_the_same_names_survive(lab: Lab, tmp_path: Path) -> None:
    host = enrolled(lab, tmp_path, overrides={"publish.backends": ["rfc2136"]})
    name = host.name
    # Someone's raw RSA key (RFC 3110 form), e.g. from `ipsec showhostkey --ipseckey`.
    blob = b"\x03\x01\x00\x01" + bytes(range(1, 129))
    foreign_rsa = f"10 0 2 . {base64.b64encode(blob).decode()}"
    foreign_tlsa = "3 0 1 " + "cd" * 32

    def add_foreign(update: object) -> None:
        update.add(f"_oe.{name}.", 77, "TXT", '"v=spf1 -all"')  # type: ignore[attr-defined]
        update.add(f"{name}.", 77, "IPSECKEY", foreign_rsa)  # type: ignore[attr-defined]
        update.add(f"_500._udp.{name}.", 77, "TLSA", foreign_tlsa)  # type: ignore[attr-defined]

    send_update(lab, "oe.test", add_foreign)
    before = {
        "a": authoritative(lab, name, "A"),
        "txt": authoritative(lab, f"_oe.{name}", "TXT"),
        "ipseckey": authoritative(lab, name, "IPSECKEY"),
        "tlsa": authoritative(lab, f"_500._udp.{name}", "TLSA"),
    }

    def foreign_intact() -> None:
        assert authoritative(lab, name, "A") == before["a"]
        assert authoritative(lab, f"_oe.{name}", "TXT").get('"v=spf1 -all"') == 77
        assert authoritative(lab, name, "IPSECKEY").get(
            dns.rdata.from_text("IN", "IPSECKEY", foreign_rsa).to_text()) == 77
        assert authoritative(lab, f"_500._udp.{name}", "TLSA").get(foreign_tlsa) == 77

    for args in (("publish",), ("unenroll",), ("unenroll", "--purge")):
        code, doc, err = oeagent(host.config_path, *args)
        assert code == 0, (args, doc.get("error"), err)
        foreign_intact()
    # Purged: of ours nothing is left, the foreign values are.
    assert authoritative(lab, f"_oe.{name}", "TXT") == {'"v=spf1 -all"': 77}
    assert authoritative(lab, f"_500._udp.{name}", "TLSA") == {foreign_tlsa: 77}
    assert authoritative(lab, f"_4500._udp.{name}", "TLSA") == {}


def _refusing(lab: Lab, tmp_path: Path, fault: str) -> tuple[dict[str, object], str, Path]:
    if fault == "refused zone":
        host = enrolled(lab, tmp_path, name=f"p{uuid.uuid4().hex[:10]}.locked.test")
        overrides: dict[str, object] = {"challenge.dns.zone": None}
    else:
        host = enrolled(lab, tmp_path)
        overrides = {}
    if fault == "wrong TSIG key":
        wrong = tmp_path / "wrong.key"
        wrong.write_text("c29tZXRoaW5nLWVsc2UtZW50aXJlbHktMTIzNDU2Nzg=\n")
        wrong.chmod(0o600)
        overrides["publish.dns.tsig_secret_file"] = str(wrong)
    if fault == "DNS server down":
        overrides["publish.dns.port"] = free_ports(1)[0]
        overrides["publish.dns.timeout"] = 2
    path = host.reconfigure({**BOTH, **overrides})
    code, doc, err = oeagent(path, "publish")
    assert code == 69, (doc, err)
    assert doc["ok"] is False and "Traceback" not in err
    return doc, host.name, tmp_path


@pytest.mark.parametrize(("fault", "says"), [
    ("wrong TSIG key", "BADSIG"),
    ("refused zone", "REFUSED"),
    ("DNS server down", "cannot query"),
])
def test_dns_failures_are_clear_and_nothing_is_half_published(
    lab: Lab, tmp_path: Path, fault: str, says: str
) -> None:
    doc, name, root = _refusing(lab, tmp_path, fault)
    error = str(doc["error"])
    assert says in error
    assert "c29tZXRoaW5n" not in error
    assert all(not values for values in our_records(lab, name).values())
    # The document backend comes after DNS and was never reached.
    assert not (root / "www" / ".well-known" / "oe-ipsec").exists()
    ledger = advertise.Ledger.load(StateDir(root / "state"))
    assert ledger.pins == {}


def test_concurrent_change_between_plan_and_apply_converges(
    lab: Lab, make_lab_config: object
) -> None:
    name = fresh_name(lab)
    path = make_lab_config({"host.names": [name], "publish.backends": ["rfc2136"]})  # type: ignore[operator]
    cfg = config_module.load(path)
    backend = publish.make("rfc2136", cfg, StateDir(cfg.state_dir))
    key = new_key()
    backend.apply(backend.plan(desired(name, key)))
    following = new_key()
    want = desired(name, key, following)
    plan = backend.plan(want)
    # Someone else changes oeagent's records in between: a stale OE TXT and a TLSA removed.
    stale = '"v=OE1; id=00000000deadbeef; mode=testing"'

    def interfere(update: object) -> None:
        update.add(f"_oe.{name}.", 5, "TXT", stale)  # type: ignore[attr-defined]
        update.delete(f"_4500._udp.{name}.", "TLSA")  # type: ignore[attr-defined]

    send_update(lab, "oe.test", interfere)
    applied = backend.apply(plan)
    assert applied.attempts == 2  # the compare-and-swap failed once, then re-read and won
    assert backend.plan(want).empty
    records = our_records(lab, name)
    assert stale not in records["txt"] and len(records["txt"]) == 1
    assert {tlsa_pin(v) for v in records["tlsa4500"]} == set(want.advert.pins)
    assert backend.verify(want, 15).ok


def test_key_rollover_next_pin_before_the_switch_old_pin_gone_after(
    lab: Lab, tmp_path: Path
) -> None:
    host = enrolled(lab, tmp_path)
    path = host.reconfigure({"publish.backends": ["rfc2136"]})
    state = StateDir(tmp_path / "state")
    old_pin = keys.spki_sha256(keys.load_key_pem(host.key.read_bytes()))
    # enroll publishes when publishing is configured.
    code, doc, err = oeagent(path, "enroll", "--force")
    assert code == 0, err
    assert doc["publish"]["verify"][0]["ok"]
    assert {tlsa_pin(v) for v in authoritative(lab, f"_500._udp.{host.name}", "TLSA")} == {old_pin}

    # The renewal side stages the next key: its pin goes out before the switch.
    following = ec.generate_private_key(ec.SECP256R1())
    state.write_bytes(keyroll.next_key_path(state), keys.key_to_pem(following))
    new_pin = keys.spki_sha256(following)
    code, doc, err = oeagent(path, "publish")
    assert code == 0, (doc.get("error"), err)
    secure, tlsa = validated(lab, f"_500._udp.{host.name}", "TLSA")
    assert secure and {tlsa_pin(v) for v in tlsa} == {old_pin, new_pin}
    assert len(authoritative(lab, host.name, "IPSECKEY")) == 2
    first_seen = dt.datetime.fromisoformat(advertise.Ledger.load(state).pins[new_pin])
    switch = advertise.earliest_switch(host.config, state, new_pin)
    assert switch == first_seen + dt.timedelta(seconds=2 * 5)  # two TTLs of the lab's 5 s
    # The key rollover learns when the pin went out, and refuses to switch before two TTLs.
    _, upcoming = keyroll.current_and_next_keys(state)
    assert upcoming is not None and upcoming.announced_at == first_seen
    eager = dataclasses.replace(host.config, rollover=dataclasses.replace(
        host.config.rollover, key_lifetime=86400.0, announce=0.0))
    assert keyroll.switch_ready(eager, state, first_seen + dt.timedelta(seconds=1)) is None
    ready = keyroll.switch_ready(eager, state, switch)
    assert ready is not None and keys.spki_sha256(ready) == new_pin

    # The switch: the next key becomes the current one and is enrolled; the old pin goes.
    shutil.move(keyroll.next_key_path(state), host.key)
    code, doc, err = oeagent(path, "enroll", "--force")
    assert code == 0, (doc.get("error"), err)
    secure, tlsa = validated(lab, f"_500._udp.{host.name}", "TLSA")
    assert secure and {tlsa_pin(v) for v in tlsa} == {new_pin}
    assert len(authoritative(lab, host.name, "IPSECKEY")) == 1
    assert list(advertise.Ledger.load(state).pins) == [new_pin]


def test_dry_run_changes_nothing(lab: Lab, tmp_path: Path) -> None:
    host = enrolled(lab, tmp_path)
    path = host.reconfigure({"publish.backends": ["rfc2136", "zonefile", "wellknown"]})
    serial = settled_soa_serial(lab)
    for args in (("publish", "--dry-run"), ("unenroll", "--dry-run")):
        code, doc, err = oeagent(path, *args)
        assert code == 0, (doc.get("error"), err)
        assert doc["dry_run"] is True
    assert any(p["changes"] for p in doc["plans"]) or args[0] == "unenroll"
    code, doc, err = oeagent(path, "publish", "--dry-run")
    assert {p["backend"]: len(p["changes"]) for p in doc["plans"]} == {
        "rfc2136": 4, "zonefile": 4, "wellknown": 1}
    assert soa_serial(lab) == serial
    assert all(not values for values in our_records(lab, host.name).values())
    assert not (tmp_path / "www" / ".well-known" / "oe-ipsec").exists()
    assert not (tmp_path / "oe-records.zone").exists()
    assert not (tmp_path / "state" / "published.json").exists()
    assert not (tmp_path / "state" / "published").exists()


def test_unenroll_none_markers_then_purge_after_max_age(lab: Lab, tmp_path: Path) -> None:
    host = enrolled(lab, tmp_path, overrides={"publish.backends": ["rfc2136", "zonefile"]})
    code, _, err = oeagent(host.config_path, "publish")
    assert code == 0, err
    serial = host.fullchain.parent.name
    code, doc, err = oeagent(host.config_path, "unenroll", "--revoke")
    assert code == 0, (doc.get("error"), err)
    assert doc["revoked"] == serial
    status = requests.get(f"{lab.info.management_url}/cert-status-by-serial/{serial}",
                          verify=str(lab.info.https_ca_pem), timeout=5)
    assert status.status_code == 200 and status.json()["Status"] == "Revoked"
    records = our_records(lab, host.name)
    assert not records["tlsa500"] and not records["tlsa4500"] and not records["ipseckey"]
    (txt,) = records["txt"]
    assert parse_txt(txt.strip('"')).mode == "none"
    assert doc["nss_removed"] == 1
    # Publishing again while unenrolled keeps mode none instead of advertising again.
    code, doc, err = oeagent(host.config_path, "publish")
    assert code == 0, err
    assert doc["advertisement"]["mode"] == "none"
    # With no current certificate a renewal used to order a new one (and deploy it): an
    # unenroll --revoke undone by the next timer run. It orders nothing now.
    code, doc, err = oeagent(host.config_path, "renew")
    assert code == 0, (doc.get("error"), err)
    assert doc["issued"] is False and doc["reason"] == "unenrolled"
    assert doc["certificate"] is None
    # One max_age later (the lab's 300 s), a rerun removes the markers.
    state = StateDir(tmp_path / "state")
    ledger = advertise.Ledger.load(state)
    ledger.unenrolled_at = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=301)).isoformat()
    ledger.save(state, None)
    code, doc, err = oeagent(host.config_path, "unenroll")
    assert code == 0, (doc.get("error"), err)
    assert all(not values for values in our_records(lab, host.name).values())
    zone_text = (tmp_path / "oe-records.zone").read_text()
    assert "IN TXT" not in zone_text and zone_text.startswith(";;")
    # The revoked certificate is never deployed again: enroll issues a new one, which ends
    # the unenroll and advertises the host again.
    code, doc, err = oeagent(host.config_path, "enroll")
    assert code == 0, (doc.get("error"), err)
    assert doc["issued"] is True and doc["certificate"]["serial"] != serial
    assert doc["publish"]["advertisement"]["mode"] == "enforce"
    (txt,) = our_records(lab, host.name)["txt"]
    assert parse_txt(txt.strip('"')).mode == "enforce"


def test_publish_needs_a_deployed_certificate(make_lab_config: object) -> None:
    path = make_lab_config({"publish.backends": ["zonefile"]})  # type: ignore[operator]
    code, doc, _ = oeagent(path, "publish")
    assert code == 69 and "run `oeagent enroll` first" in str(doc["error"])


def test_zone_names_are_found_by_soa_walk(lab: Lab, make_lab_config: object) -> None:
    name = fresh_name(lab, zone="plain.test")
    path = make_lab_config({"host.names": [name], "publish.backends": ["rfc2136"],  # type: ignore[operator]
                            "challenge.dns.zone": None})
    cfg = config_module.load(path)
    backend = publish.make("rfc2136", cfg, StateDir(cfg.state_dir))
    backend.apply(backend.plan(desired(name, new_key())))
    assert authoritative(lab, f"_oe.{name}", "TXT")
    # plain.test is unsigned: the records are there, but never with AD.
    result = backend.verify(desired(name, new_key()), 1)
    assert not result.ok and "no AD" in result.checks[0].detail
    backend.withdraw()
    assert dns.name.from_text(name).is_subdomain(dns.name.from_text("plain.test"))
    assert not authoritative(lab, f"_oe.{name}", "TXT")
    assert dns.rdatatype.TXT  # keep the import honest


def _reverse_backend(make_lab_config: object, name: str, address: str) -> publish.Backend:
    path = make_lab_config({"host.names": [name], "publish.backends": ["rfc2136"],  # type: ignore[operator]
                            "publish.addresses": [address], "publish.reverse": True,
                            "challenge.dns.zone": None})
    cfg = config_module.load(path)
    return publish.make("rfc2136", cfg, StateDir(cfg.state_dir))


def test_ipseckey_at_the_reverse_name_too(lab: Lab, make_lab_config: object) -> None:
    name = fresh_name(lab)
    backend = _reverse_backend(make_lab_config, name, "192.0.2.10")
    want = desired(name, new_key())
    want = dataclasses.replace(want, advert=dataclasses.replace(want.advert,
                                                                addresses=("192.0.2.10",)))
    backend.apply(backend.plan(want))
    secure, reverse = validated(lab, "10.2.0.192.in-addr.arpa", "IPSECKEY")
    assert secure and reverse == {r for r in authoritative(lab, name, "IPSECKEY")}
    assert backend.verify(want, 15).ok
    backend.withdraw()
    assert not authoritative(lab, "10.2.0.192.in-addr.arpa", "IPSECKEY")


def test_a_refused_reverse_zone_undoes_the_forward_zone(lab: Lab, make_lab_config: object) -> None:
    name = fresh_name(lab)
    backend = _reverse_backend(make_lab_config, name, "203.0.113.7")
    want = desired(name, new_key())
    want = dataclasses.replace(want, advert=dataclasses.replace(want.advert,
                                                                addresses=("203.0.113.7",)))
    with pytest.raises(DnsUpdateError, match="REFUSED") as info:
        backend.apply(backend.plan(want))
    assert "113.0.203.in-addr.arpa" in str(info.value)
    # oe.test took its part of the change first; it was undone when the reverse zone refused.
    assert wait_until(lambda: all(not v for v in our_records(lab, name).values()), 5)


def test_the_agents_publish_job_puts_the_advertisement_out(lab: Lab, tmp_path: Path) -> None:
    """`oeagent run` keeps the advertisement in step: its publish job publishes, then plans
    nothing; without backends it only asks to be woken much later."""
    import contextlib

    from oeagent.agent import PUBLISH_INTERVAL, publish_job
    from oeagent.report import NullReporter

    host = enrolled(lab, tmp_path)
    quiet = config_module.load(host.config_path)
    before = dt.datetime.now(dt.UTC)
    assert publish_job(quiet, NullReporter(), contextlib.nullcontext) - before > PUBLISH_INTERVAL
    assert not authoritative(lab, f"_oe.{host.name}", "TXT")

    cfg = config_module.load(host.reconfigure({"publish.backends": ["rfc2136"]}))
    wake = publish_job(cfg, NullReporter(), contextlib.nullcontext)
    assert wake - before <= PUBLISH_INTERVAL + dt.timedelta(minutes=1)
    assert authoritative(lab, f"_oe.{host.name}", "TXT")
    assert {tlsa_pin(v) for v in authoritative(lab, f"_500._udp.{host.name}", "TLSA")} == {
        keys.spki_sha256(keys.load_key_pem(host.key.read_bytes()))}
    serial = settled_soa_serial(lab)
    publish_job(cfg, NullReporter(), contextlib.nullcontext)  # unchanged: nothing is sent
    assert soa_serial(lab) == serial
