"""The DNS forms of the advertisement, derivation from state, and the [publish] config."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from oeagent import config, keyroll, keys
from oeagent.advertisement import Advertisement
from oeagent.errors import ConfigError
from oeagent.publish import advertise, records
from oeagent.publish.base import Desired, Plan
from oeagent.publish.zonefile import ZonefileBackend, nsupdate_script
from oeagent.state import StateDir

FQDN = "server.oe.test"
EXPIRES = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def desired_for(*private: keys.PrivateKey, mode: str = "enforce",
                addresses: tuple[str, ...] = ()) -> Desired:
    public = tuple(k.public_key() for k in private) if mode != "none" else ()
    advert = Advertisement(FQDN, records.auth_method(private[0]),
                           tuple(keys.spki_sha256(k) for k in public), mode=mode,
                           addresses=addresses)
    return Desired(advert, public, EXPIRES)


def by_type(rrsets: dict[records.RRsetKey, object], rdtype: str) -> dict[str, object]:
    return {k[0].to_text(omit_final_dot=True): v for k, v in rrsets.items()
            if k[1] == dns.rdatatype.from_text(rdtype)}


def test_ecdsa_ipseckey_is_rfc6605_x_and_y() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    algorithm, blob = records.ipseckey_algorithm_and_key(key.public_key())
    numbers = key.public_key().public_numbers()
    assert algorithm == 3 and len(blob) == 64
    assert blob == numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


def test_rsa_ipseckey_is_rfc3110() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    algorithm, blob = records.ipseckey_algorithm_and_key(key.public_key())
    assert algorithm == 2
    assert blob[:4] == b"\x03\x01\x00\x01"  # exponent length 3, then 65537
    assert int.from_bytes(blob[4:], "big") == key.public_key().public_numbers().n
    assert records.auth_method(key) == "rsasig"


def test_other_curves_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="P-256"):
        records.ipseckey_algorithm_and_key(key.public_key())
    with pytest.raises(ValueError, match="P-256"):
        records.auth_method(key)


def test_records_for_one_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    want = desired_for(key)
    rrsets = records.dns_rrsets(want.advert, want.public_keys, 300, reverse=False)
    pin = keys.spki_sha256(key)
    tlsa = by_type(rrsets, "TLSA")
    assert set(tlsa) == {"_500._udp.server.oe.test", "_4500._udp.server.oe.test"}
    for rrset in tlsa.values():
        assert [r.to_text() for r in rrset] == [f"3 1 1 {pin}"]  # type: ignore[attr-defined]
    (ipseckey,) = by_type(rrsets, "IPSECKEY")["server.oe.test"]  # type: ignore[misc]
    text = ipseckey.to_text()
    assert text.startswith("10 0 3 . ")
    # It round-trips through the presentation form (what nsupdate and zone files carry).
    again = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.IPSECKEY, text)
    assert again.key == records.ipseckey_algorithm_and_key(key.public_key())[1]
    (txt,) = by_type(rrsets, "TXT")["_oe.server.oe.test"]  # type: ignore[misc]
    assert txt.to_text() == f'"{want.advert.txt()}"'
    assert all(r.ttl == 300 for r in rrsets.values())


def test_rollover_pins_both_keys_current_first() -> None:
    current, following = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    want = desired_for(current, following)
    rrsets = records.dns_rrsets(want.advert, want.public_keys, 60, reverse=False)
    tlsa = by_type(rrsets, "TLSA")["_500._udp.server.oe.test"]
    assert len(tlsa) == 2  # type: ignore[arg-type]
    precedences = sorted(r.precedence for r in by_type(rrsets, "IPSECKEY")["server.oe.test"])  # type: ignore[attr-defined]
    assert precedences == [10, 20]


def test_mode_none_is_only_the_txt() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    want = desired_for(key, mode="none")
    rrsets = records.dns_rrsets(want.advert, want.public_keys, 60, reverse=True)
    assert [k[1] for k in rrsets] == [dns.rdatatype.TXT]
    assert "mode=none" in next(iter(rrsets.values()))[0].to_text()


def test_reverse_names_get_the_ipseckey_too() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    want = desired_for(key, addresses=("192.0.2.10", "2001:db8::1"))
    rrsets = records.dns_rrsets(want.advert, want.public_keys, 60, reverse=True)
    owners = set(by_type(rrsets, "IPSECKEY"))
    assert "10.2.0.192.in-addr.arpa" in owners
    assert any(o.endswith("ip6.arpa") for o in owners) and FQDN in owners
    managed = records.managed_rrsets(FQDN, (500, 4500), want.advert.addresses, reverse=True)
    assert set(rrsets) <= set(managed)


def test_keys_must_match_pins() -> None:
    key, other = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    want = desired_for(key)
    with pytest.raises(ValueError, match="do not match"):
        records.dns_rrsets(want.advert, (other.public_key(),), 60, reverse=False)


def test_convention_values() -> None:
    txt = dns.rdata.from_text("IN", "TXT", '"v=OE1; id=0123456789abcdef; mode=none"')
    foreign = dns.rdata.from_text("IN", "TXT", '"v=spf1 -all"')
    assert records.is_convention_value(dns.rdatatype.TXT, txt)
    assert not records.is_convention_value(dns.rdatatype.TXT, foreign)
    tlsa = dns.rdata.from_text("IN", "TLSA", "3 1 1 " + "ab" * 32)
    other_tlsa = dns.rdata.from_text("IN", "TLSA", "3 0 1 " + "ab" * 32)
    assert records.is_convention_value(dns.rdatatype.TLSA, tlsa)
    assert not records.is_convention_value(dns.rdatatype.TLSA, other_tlsa)


def test_zonefile_nsupdate_input(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    backend = ZonefileBackend(tmp_path / "oe.zone", 300, reverse=False)
    plan = backend.plan(desired_for(key))
    script = nsupdate_script(plan, zone="oe.test")
    lines = script.splitlines()
    assert lines[0] == "zone oe.test." and lines[-1] == "send"
    assert sum(line.startswith("update add ") for line in lines) == 4
    backend.apply(plan)
    withdraw = backend.plan(None)
    assert sum(line.startswith("update delete ") for line in nsupdate_script(withdraw).splitlines()) == 4
    with pytest.raises(ValueError):
        nsupdate_script(Plan("rfc2136", None))


def test_advertised_keys_adds_a_staged_next_key(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    current = ec.generate_private_key(ec.SECP256R1())
    assert advertise.advertised_keys(state, current.public_key()) == (current.public_key(),)
    following = ec.generate_private_key(ec.SECP256R1())
    state.write_bytes(keyroll.next_key_path(state), keys.key_to_pem(following))
    pinned = advertise.advertised_keys(state, current.public_key())
    assert [keys.spki_sha256(k) for k in pinned] == [keys.spki_sha256(current),
                                                     keys.spki_sha256(following)]
    # A next key that is already the current one (switch done, file not yet removed): one pin.
    state.write_bytes(keyroll.next_key_path(state), keys.key_to_pem(current))
    assert len(advertise.advertised_keys(state, current.public_key())) == 1


def _parse(tmp_path: Path, extra: str) -> config.Config:
    secret = tmp_path / "tsig.key"
    secret.write_text(base64.b64encode(b"k" * 32).decode())
    secret.chmod(0o600)
    text = (f'[host]\nnames = ["server.oe.test"]\naddresses = ["192.0.2.1"]\n'
            f'[challenge.dns]\nserver = "192.0.2.53"\nport = 5353\ntsig_secret_file = "{secret}"\n'
            + extra)
    path = tmp_path / "oeagent.toml"
    path.write_text(text)
    return config.load(path)


def test_publish_config_defaults_and_inheritance(tmp_path: Path) -> None:
    cfg = _parse(tmp_path, '[publish]\nbackends = ["rfc2136"]\n')
    pub = cfg.publish
    assert pub.enabled and pub.mode == "enforce" and pub.max_age == 86400
    assert (pub.dns.server, pub.dns.port) == ("192.0.2.53", 5353)  # from [challenge.dns]
    assert pub.dns.tsig_secret == cfg.challenge.dns.tsig_secret
    assert pub.addresses == ("192.0.2.1",)  # from host.addresses
    assert not _parse(tmp_path, "").publish.enabled


def test_publish_config_problems_all_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(tmp_path, '[publish]\nbackends = ["rfc2136", "route53", "zonefile", "wellknown"]\n'
                         'resolver = "192.0.2.1"\nmode = "none"\nmax_age = 5\n')
    text = str(info.value)
    for expected in ("publish.backends[1]", "publish.resolver", "not a loopback",
                     "publish.mode", "publish.max_age", "publish.zonefile",
                     "publish.wellknown.webroot"):
        assert expected in text


def test_name_helpers() -> None:
    assert records.txt_owner(FQDN) == dns.name.from_text("_oe.server.oe.test")
    assert records.tlsa_owner(FQDN, 4500) == dns.name.from_text("_4500._udp.server.oe.test")
