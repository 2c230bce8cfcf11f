from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oeagent import names


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Host.Example.ORG", "host.example.org"), ("host.example.org.", "host.example.org"),
     ("bücher.example", "xn--bcher-kva.example")],
)
def test_valid_names_normalised(raw: str, expected: str) -> None:
    assert names.normalize_fqdn(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("faß.de", "xn--fa-hia.de"), ("ς.example", "xn--3xa.example"),
     ("BÜCHER.Example", "xn--bcher-kva.example")],
)
def test_idn_follows_idna2008_not_2003(raw: str, expected: str) -> None:
    # Python's "idna" codec is IDNA 2003: it turned faß.de into fass.de and final sigma into sigma,
    # other names with other owners, so a certificate or a peer's authenticated conn would
    # have named someone else.
    assert names.normalize_fqdn(raw) == expected


@pytest.mark.parametrize("raw", ["a\u200db.example", "\u2603.example"])
def test_idn_refused_where_idna2008_refuses(raw: str) -> None:
    with pytest.raises(ValueError, match="internationalised"):
        names.normalize_fqdn(raw)


@pytest.mark.parametrize(
    "raw",
    ["", "localhost", "a..example", "-a.example", "a-.example", "*.example.org", "a_b.example",
     "a.example/../etc", "a.example;reboot", "a.example\x00", "x" * 64 + ".example",
     ("a" * 60 + ".") * 5 + "org", "192.0.2.1", "a.123", "$(id).example",
     "a\n.example.org", "a.example.org\n", "a\r.example.org"],
)
def test_hostile_names_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        names.normalize_fqdn(raw)


def test_ip_and_nickname() -> None:
    assert names.normalize_ip("2001:DB8::0:1") == "2001:db8::1"
    with pytest.raises(ValueError):
        names.normalize_ip("192.0.2.1/24")
    # ipaddress keeps an IPv6 zone index, which reached a policy file as "fe80::1%eth0/128".
    with pytest.raises(ValueError, match=r"zone index \(after the '%'\)"):
        names.normalize_ip("fe80::1%eth0")
    # ... and a zone index with a control character is shown escaped, never raw.
    with pytest.raises(ValueError) as info:
        names.normalize_ip("fe80::1%eth0\x1b[2J")
    assert "\x1b" not in str(info.value) and "\\x1b" in str(info.value)
    assert names.check_nickname("oeagent-server.oe") == "oeagent-server.oe"
    for bad in ("", "a b", "../x", "-x", "x" * 65, "a;b", "oeagent\n"):
        with pytest.raises(ValueError):
            names.check_nickname(bad)


@given(st.ip_addresses().flatmap(lambda a: st.sampled_from(
    [str(a), a.exploded, str(a).upper()] + ([f"{a}%eth0"] if a.version == 6 else []))))
def test_every_address_passes_the_quick_check(text: str) -> None:
    """The shortcut before ``ip_address`` never turns an address away."""
    assert names.could_be_ip(text)
    # A zone index: an address, refused by both with that reason, not "not a host name".
    refusal = "zone index" if "%" in text else "is an IP address, not a host name"
    if "%" in text:
        with pytest.raises(ValueError, match=refusal):
            names.normalize_ip(text)
    else:
        assert names.normalize_ip(text) == str(ipaddress.ip_address(text))
    with pytest.raises(ValueError, match=refusal):
        names.normalize_fqdn(text)


@pytest.mark.parametrize("text", ["fe80::1%eth0", "fe80::1%$(id)", "fe80::1%a\nconn evil",
                                  'fe80::1%x"', "2001:db8::1%1"])
def test_scoped_addresses_refused(text: str) -> None:
    # ipaddress takes anything after '%' as the zone and keeps it in str(): it reached the
    # policy renderer (an internal error) and could carry a newline into ipsec.conf.
    with pytest.raises(ValueError, match="zone index"):
        names.normalize_ip(text)


@given(st.text(max_size=40))
def test_the_quick_check_agrees_with_ipaddress(text: str) -> None:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return
    assert names.could_be_ip(text)
