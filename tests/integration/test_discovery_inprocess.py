"""In-process DNSSEC validation against the real lab: BIND asked directly (no validator at
all), unbound with CD, and a tampering proxy in front of BIND."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import dns.reversename
import dns.rrset
import pytest

from lab import Lab
from lab import bind as lab_bind
from oeagent import config as config_module
from oeagent.config import Config
from oeagent.discovery.lookup import Discoverer
from oeagent.discovery.validate import Validator
from oeagent.errors import ConfigError
from oeagent.resolver import Security
from tests.hostile_dns import HostileDNS, forwarding
from tests.integration.oe_peers import new_advert, publish_dns, unique

pytestmark = pytest.mark.lab
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def inprocess_config(make_lab_config: Callable[..., Path], lab: Lab, tmp_path: Path,
                     port: int | None = None, **extra: Any) -> Config:
    info = lab.info
    anchors = tmp_path / "anchors.ds"
    anchors.write_text("\n".join(lab_bind.ds_records(info.bind_port, info.bind_address)) + "\n")
    settings: dict[str, Any] = {
        "resolver": "127.0.0.1", "resolver_port": port or info.bind_port, "dns_timeout": 1,
        "validation": "in-process", "trust_anchors": str(anchors),
        "https_port": info.https_port, "https_timeout": 1, "min_cache": 60, "https": False,
        **extra,
    }
    return config_module.load(make_lab_config({"discovery": settings}))


def test_signed_advertisement_is_authenticated_without_a_validator(
        lab: Lab, make_lab_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = inprocess_config(make_lab_config, lab, tmp_path)
    ad, key = new_advert(unique())
    publish_dns(lab, ad, key, ttl=30)
    discoverer = Discoverer(cfg.discovery)
    result = discoverer.lookup(ad.fqdn, NOW)
    assert result.status == "authenticated", result.reasons
    assert result.source == "dns" and result.advertisement is not None
    assert result.advertisement.pins == ad.pins
    assert result.addresses == ("127.0.0.1",)


def test_through_unbound_with_cd(lab: Lab, make_lab_config: Callable[..., Path],
                                 tmp_path: Path) -> None:
    cfg = inprocess_config(make_lab_config, lab, tmp_path, port=lab.info.unbound_port)
    ad, key = new_advert(unique())
    publish_dns(lab, ad, key, ttl=30)
    result = Discoverer(cfg.discovery).lookup(ad.fqdn, NOW)
    assert result.status == "authenticated", result.reasons
    # CD: unbound hands over the bogus zone's data, and the verdict is ours, with the key.
    bogus = Discoverer(cfg.discovery).lookup("host.bogus.oe.test", NOW)
    assert bogus.status == "bogus", bogus.reasons
    assert any("DNSKEY bogus.oe.test.: no key matches the DS (1)" in r for r in bogus.reasons)


def test_signed_zone_without_advertisement_is_a_validated_none(
        lab: Lab, make_lab_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = inprocess_config(make_lab_config, lab, tmp_path)
    result = Discoverer(cfg.discovery).lookup(unique(), NOW)  # only the wildcard A exists
    assert result.status == "none", result.reasons
    assert "DNS: no _oe record (validated)" in result.reasons


def test_insecure_delegation_falls_to_https(lab: Lab, make_lab_config: Callable[..., Path],
                                            tmp_path: Path) -> None:
    cfg = inprocess_config(make_lab_config, lab, tmp_path, https=True)
    ad, key = new_advert(unique("insecure.oe.test"))
    publish_dns(lab, ad, key, zone="insecure.oe.test")
    result = Discoverer(cfg.discovery).lookup(ad.fqdn, NOW)
    assert result.status == "none", result.reasons
    assert "DNS: _oe record is not DNSSEC-signed; ignored" in result.reasons
    assert any(r.startswith("HTTPS: ") for r in result.reasons), result.reasons  # tried
    bare = Discoverer(cfg.discovery).lookup(unique("insecure.oe.test"), NOW)
    assert bare.status == "none" and "DNS: no _oe record (unsigned zone)" in bare.reasons


def test_bogus_delegation_is_bogus(lab: Lab, make_lab_config: Callable[..., Path],
                                   tmp_path: Path) -> None:
    cfg = inprocess_config(make_lab_config, lab, tmp_path)
    result = Discoverer(cfg.discovery).lookup("host.bogus.oe.test", NOW)
    assert result.status == "bogus", result.reasons
    assert any("no key matches the DS (1)" in r for r in result.reasons)
    # The lame delegation: BIND (not recursing) can only refer; never "none".
    lame = Discoverer(cfg.discovery).lookup("host.lame.oe.test", NOW)
    assert lame.status == "unreachable", lame.reasons
    assert any("referral to lame.oe.test." in r for r in lame.reasons)


@pytest.fixture
def proxy(lab: Lab) -> Iterator[Callable[[Callable[[dns.message.Message], None]], int]]:
    """A tampering proxy in front of BIND (UDP and TCP): the test rewrites each reply."""
    started: list[HostileDNS] = []

    def start(mutate: Callable[[dns.message.Message], None]) -> int:
        server = HostileDNS(forwarding(lab.info.bind_port, mutate)).__enter__()
        started.append(server)
        return server.port

    yield start
    for server in started:
        server.stop()


def _flip_tlsa(reply: dns.message.Message) -> None:
    for i, rrset in enumerate(reply.answer):
        if rrset.rdtype == dns.rdatatype.TLSA:
            flipped = []
            for rdata in rrset:
                cert = bytearray(rdata.cert)
                cert[0] ^= 0x01
                flipped.append(rdata.replace(cert=bytes(cert)))
            reply.answer[i] = dns.rrset.from_rdata_list(rrset.name, rrset.ttl, flipped)


def _strip_tlsa_sigs(reply: dns.message.Message) -> None:
    reply.answer = [r for r in reply.answer
                    if not (r.rdtype == dns.rdatatype.RRSIG and r.covers == dns.rdatatype.TLSA)]


@pytest.mark.parametrize("mutate", [_flip_tlsa, _strip_tlsa_sigs], ids=["flipped", "unsigned"])
def test_tampered_answer_is_bogus(lab: Lab, make_lab_config: Callable[..., Path],
                                  tmp_path: Path, proxy: Any,
                                  mutate: Callable[[dns.message.Message], None]) -> None:
    ad, key = new_advert(unique())
    publish_dns(lab, ad, key, ttl=30)
    cfg = inprocess_config(make_lab_config, lab, tmp_path, port=proxy(mutate))
    result = Discoverer(cfg.discovery).lookup(ad.fqdn, NOW)
    assert result.status == "bogus", result.reasons
    assert result.advertisement is None
    expected = "does not validate" if mutate is _flip_tlsa else "but it is inside a signed zone"
    assert any(r.startswith("TLSA _500._udp.") and expected in r for r in result.reasons), \
        result.reasons


def test_in_process_requires_trust_anchors(make_lab_config: Callable[..., Path]) -> None:
    path = make_lab_config({"discovery": {"validation": "in-process"}})
    with pytest.raises(ConfigError, match="trust_anchors"):
        config_module.load(path)


def test_peer_by_address_through_the_anchored_reverse_zone(
        lab: Lab, make_lab_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = inprocess_config(make_lab_config, lab, tmp_path)
    ad, key = new_advert(unique())
    address = f"192.0.2.{int(ad.fqdn[1:3], 16) % 200 + 20}"
    publish_dns(lab, ad, key, ttl=30, address=address)
    reverse = dns.reversename.from_address(address)
    update = lab.update_message(lab_bind.REVERSE_ZONE)
    update.replace(reverse, 30, "PTR", f"{ad.fqdn}.")
    reply = dns.query.tcp(update, "127.0.0.1", port=lab.info.bind_port, timeout=5)
    assert reply.rcode() == 0
    deadline = time.monotonic() + 5  # inline signing publishes the update a moment later
    while not lab_bind.query(lab.info.bind_port, reverse.to_text(), "PTR").answer:
        assert time.monotonic() < deadline, "BIND never served the PTR"
        time.sleep(0.1)
    result = Discoverer(cfg.discovery).lookup(address, NOW)
    assert result.status == "authenticated", result.reasons
    assert result.fqdn == ad.fqdn and result.advertisement is not None


# -- NSEC3 (RFC 5155): nsec3.test without opt-out, optout.test with it ----------------------

def _validator(cfg: Config) -> Validator:
    validator = Discoverer(cfg.discovery).validator
    assert validator is not None
    return validator


@pytest.mark.parametrize("via_unbound", [False, True], ids=["bind", "unbound-cd"])
def test_nsec3_zone_signed_advertisement_is_authenticated(
        lab: Lab, make_lab_config: Callable[..., Path], tmp_path: Path,
        via_unbound: bool) -> None:
    port = lab.info.unbound_port if via_unbound else None
    cfg = inprocess_config(make_lab_config, lab, tmp_path, port=port)
    ad, key = new_advert(unique(lab_bind.NSEC3_ZONE))
    publish_dns(lab, ad, key, zone=lab_bind.NSEC3_ZONE, ttl=30)
    result = Discoverer(cfg.discovery).lookup(ad.fqdn, NOW)
    assert result.status == "authenticated", result.reasons
    assert result.advertisement is not None and result.advertisement.pins == ad.pins
    # The name exists now with other types: NODATA from the NSEC3 matching it.
    nodata = _validator(cfg).query(f"{ad.fqdn}.", "TXT")
    assert nodata.security is Security.SECURE and nodata.empty, nodata.reason
    assert "nodata (validated NSEC3)" in nodata.reason


def test_nsec3_zone_without_advertisement_is_a_validated_none(
        lab: Lab, make_lab_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = inprocess_config(make_lab_config, lab, tmp_path)
    # _oe.<name> TXT: wildcard NODATA (the zone's "*" has only an A); <name> A: an answer
    # synthesized from the wildcard, with the NSEC3 covering the next closer name.
    fqdn = unique(lab_bind.NSEC3_ZONE)
    result = Discoverer(cfg.discovery).lookup(fqdn, NOW)
    assert result.status == "none", result.reasons
    assert "DNS: no _oe record (validated)" in result.reasons
    assert result.addresses == ("127.0.0.1",)
    # NXDOMAIN: nothing below server.nsec3.test., and no wildcard there.
    deep = Discoverer(cfg.discovery).lookup(f"x.server.{lab_bind.NSEC3_ZONE}", NOW)
    assert deep.status == "none" and "DNS: no _oe record (validated)" in deep.reasons, deep.reasons
    validator = _validator(cfg)
    for name, rdtype, proof in [
            (f"_oe.{fqdn}.", "TXT", "nodata"),  # the wildcard's NSEC3 lacks TXT
            (f"x.server.{lab_bind.NSEC3_ZONE}.", "A", "nxdomain"),
            (f"server.{lab_bind.NSEC3_ZONE}.", "TXT", "nodata"),
            (f"{lab_bind.NSEC3_INSECURE_CHILD}.", "DS", "insecure delegation")]:
        answer = validator.query(name, rdtype)
        assert answer.security is Security.SECURE and answer.empty, answer.reason
        assert f"{proof} (validated NSEC3)" in answer.reason, answer.reason
    wild = validator.query(f"{fqdn}.", "A")
    assert wild.security is Security.SECURE and wild.rrset is not None, wild.reason


@pytest.mark.parametrize("child, why", [
    (lab_bind.NSEC3_INSECURE_CHILD, "insecure delegation (validated NSEC3)"),
    (lab_bind.OPTOUT_INSECURE_CHILD, "only an opt-out NSEC3 covers it"),
])
def test_insecure_delegation_under_an_nsec3_parent_falls_to_https(
        lab: Lab, make_lab_config: Callable[..., Path], tmp_path: Path, child: str,
        why: str) -> None:
    cfg = inprocess_config(make_lab_config, lab, tmp_path, https=True)
    ad, key = new_advert(unique(child))
    publish_dns(lab, ad, key, zone=child)
    result = Discoverer(cfg.discovery).lookup(ad.fqdn, NOW)
    assert result.status == "none", result.reasons
    assert "DNS: _oe record is not DNSSEC-signed; ignored" in result.reasons
    assert any(r.startswith("HTTPS: ") for r in result.reasons), result.reasons  # tried
    answer = _validator(cfg).query(f"_oe.{ad.fqdn}.", "TXT")
    assert answer.security is Security.INSECURE and answer.rrset is not None
    assert why in answer.reason, answer.reason


def test_opt_out_never_authenticates_a_denial(
        lab: Lab, make_lab_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = inprocess_config(make_lab_config, lab, tmp_path)
    # Every NSEC3 of optout.test has the opt-out flag: a name it does not have may be an
    # unsigned delegation, so its absence is insecure (HTTPS decides), never proven.
    result = Discoverer(cfg.discovery).lookup(unique(lab_bind.OPTOUT_ZONE), NOW)
    assert result.status == "none", result.reasons
    assert "DNS: no _oe record (unsigned zone)" in result.reasons
    answer = _validator(cfg).query(f"x.server.{lab_bind.OPTOUT_ZONE}.", "A")
    assert answer.security is Security.INSECURE and "may be an unsigned delegation" in \
        answer.reason, answer.reason
    # What exists is still proven: the matching NSEC3 denies the type.
    nodata = _validator(cfg).query(f"server.{lab_bind.OPTOUT_ZONE}.", "TXT")
    assert nodata.security is Security.SECURE and "nodata (validated NSEC3)" in nodata.reason


def _strip_nsec3_sigs(reply: dns.message.Message) -> None:
    reply.authority = [r for r in reply.authority
                       if not (r.rdtype == dns.rdatatype.RRSIG
                               and r.covers == dns.rdatatype.NSEC3)]


def _flip_nsec3(reply: dns.message.Message) -> None:
    for i, rrset in enumerate(reply.authority):
        if rrset.rdtype == dns.rdatatype.NSEC3:
            rdata = rrset[0]
            nxt = bytearray(rdata.next)
            nxt[-1] ^= 0x01
            reply.authority[i] = dns.rrset.from_rdata(rrset.name, rrset.ttl,
                                                      rdata.replace(next=bytes(nxt)))


def _drop_last_nsec3(reply: dns.message.Message) -> None:
    """Leave out one NSEC3 of the proof (with its RRSIG): the proof is incomplete."""
    owners = [r.name for r in reply.authority if r.rdtype == dns.rdatatype.NSEC3]
    if owners:
        reply.authority = [r for r in reply.authority if r.name != owners[-1]]


@pytest.mark.parametrize("mutate, why", [
    (_strip_nsec3_sigs, "denial without signed NSEC3, but it is inside a signed zone"),
    (_flip_nsec3, "does not validate"),
    (_drop_last_nsec3, "the NSEC3 records do not prove the denial"),
], ids=["unsigned", "flipped", "incomplete"])
def test_tampered_nsec3_denial_is_bogus(lab: Lab, make_lab_config: Callable[..., Path],
                                        tmp_path: Path, proxy: Any,
                                        mutate: Callable[[dns.message.Message], None],
                                        why: str) -> None:
    cfg = inprocess_config(make_lab_config, lab, tmp_path, port=proxy(mutate))
    # NXDOMAIN for _oe.x.server.nsec3.test.: closest encloser, next closer and wildcard.
    result = Discoverer(cfg.discovery).lookup(f"x.server.{lab_bind.NSEC3_ZONE}", NOW)
    assert result.status == "bogus", result.reasons
    assert any(why in r for r in result.reasons), result.reasons
