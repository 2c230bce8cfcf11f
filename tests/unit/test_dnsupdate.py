"""RFC 2136 helpers that need no server: message building, error texts, zone finding logic."""

from __future__ import annotations

from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest

from oeagent import dnsupdate
from oeagent.ca import dns01
from oeagent.errors import DnsUpdateError
from oeagent.secrets import Secret

SECRET = Secret(b"0123456789abcdef0123456789abcdef", Path("/etc/oeagent/tsig.key"))
KEY = dnsupdate.TsigKey("oeagent-key", "hmac-sha256", SECRET)
SERVER = dnsupdate.Server("192.0.2.53", 53, KEY)
ZONE = dns.name.from_text("oe.test")
OWNER = dns.name.from_text("_acme-challenge.server.oe.test")


def wire_class(rrset: dns.rrset.RRset) -> dns.rdataclass.RdataClass:
    """The class an update record carries on the wire (dnspython keeps it in ``deleting``)."""
    return rrset.deleting if rrset.deleting is not None else rrset.rdclass


def values(rrsets: list[dns.rrset.RRset]) -> list[str]:
    return sorted(r.to_text() for rrset in rrsets for r in rrset)



def test_add_and_delete_exact_values() -> None:
    rrset = dns01.txt_rrset(OWNER, 60, {"abc", "def"})
    msg = dnsupdate.build_update(ZONE, [dnsupdate.Change("add", rrset)], key=KEY)
    assert msg.zone[0].name == ZONE
    assert {(r.name, r.ttl, wire_class(r)) for r in msg.update} == {(OWNER, 60, dns.rdataclass.IN)}
    assert values(msg.update) == ['"abc"', '"def"']
    assert msg.keyname == dns.name.from_text("oeagent-key")

    msg = dnsupdate.build_update(ZONE, [dnsupdate.Change("delete", rrset)], key=KEY)
    # Class NONE = "delete these values", not ANY = "delete the whole rrset" (RFC 2136 §2.5.4).
    assert {wire_class(r) for r in msg.update} == {dns.rdataclass.NONE}
    assert values(msg.update) == ['"abc"', '"def"']


def test_replace_with_compare_and_swap_prerequisite() -> None:
    old = dns01.txt_rrset(OWNER, 60, {"old"})
    new = dns01.txt_rrset(OWNER, 60, {"new"})
    msg = dnsupdate.build_update(
        ZONE, [dnsupdate.Change("replace", new)],
        [dnsupdate.Prerequisite("present", OWNER, dns.rdatatype.TXT, old)],
    )
    (pre,) = msg.prerequisite
    assert wire_class(pre) == dns.rdataclass.IN and values([pre]) == ['"old"']
    deleted_all, added = msg.update
    assert wire_class(deleted_all) == dns.rdataclass.ANY and values([added]) == ['"new"']


def test_absent_prerequisite_and_whole_rrset_delete() -> None:
    empty = dns.rrset.RRset(OWNER, dns.rdataclass.IN, dns.rdatatype.TXT)
    msg = dnsupdate.build_update(
        ZONE, [dnsupdate.Change("delete", empty)],
        [dnsupdate.Prerequisite("absent", OWNER, dns.rdatatype.TXT)],
    )
    assert wire_class(msg.prerequisite[0]) == dns.rdataclass.NONE
    assert wire_class(msg.update[0]) == dns.rdataclass.ANY


def test_names_outside_the_zone_are_refused() -> None:
    elsewhere = dns01.txt_rrset(dns.name.from_text("_acme-challenge.example.org"), 60, {"x"})
    with pytest.raises(ValueError, match="not in zone"):
        dnsupdate.build_update(ZONE, [dnsupdate.Change("add", elsewhere)])


@pytest.mark.parametrize(("rcode", "words"), [
    (dns.rcode.REFUSED, "update-policy"),
    (dns.rcode.NOTAUTH, "key name, secret and algorithm"),
    (dns.rcode.NOTZONE, "challenge.dns.zone"),
    (dns.rcode.NXRRSET, "prerequisite"),
])
def test_rcode_messages_say_what_to_check(rcode: dns.rcode.Rcode, words: str) -> None:
    text = dnsupdate.explain_rcode(rcode, ZONE, SERVER)
    assert dns.rcode.to_text(rcode) in text and words in text
    assert "oe.test" in text and "oeagent-key" in text and "192.0.2.53:53" in text


@pytest.mark.parametrize(("exc", "words"), [
    (dns.tsig.PeerBadKey(), "BADKEY"),
    (dns.tsig.PeerBadSignature(), "BADSIG"),
    (dns.tsig.PeerBadTime(), "BADTIME"),
    (dns.tsig.BadSignature(), "does not verify"),
])
def test_tsig_errors_never_show_the_secret(exc: Exception, words: str) -> None:
    text = dnsupdate.explain_tsig_error(exc, SERVER)
    assert words in text and "oeagent-key" in text
    assert "0123456789abcdef" not in text and "MDEyMzQ1" not in text
    assert "0123456789abcdef" not in repr(KEY)


def test_unknown_algorithm() -> None:
    with pytest.raises(DnsUpdateError, match="unsupported TSIG algorithm"):
        dnsupdate.TsigKey("k", "hmac-sha1000", SECRET).keyring()


def test_ipv6_server_text() -> None:
    assert str(dnsupdate.Server("2001:db8::53", 5353)) == "[2001:db8::53]:5353"


def _reply(qname: str, *, aa: bool, rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
           soa_owner: str | None = None,
           in_answer: bool = False) -> dns.message.Message:
    query = dns.message.make_query(qname, dns.rdatatype.SOA)
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    if aa:
        reply.flags |= dns.flags.AA
    if soa_owner:
        soa = dns.rrset.from_text(soa_owner, 60, "IN", "SOA", "ns. host. 1 60 60 60 60")
        (reply.answer if in_answer else reply.authority).append(soa)
    return reply


def test_find_zone_from_the_authority_soa(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fake_query(server: dnsupdate.Server, name: dns.name.Name,
                   rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        asked.append(name.to_text())
        return _reply(name.to_text(), aa=True, rcode=dns.rcode.NXDOMAIN, soa_owner="oe.test.")

    monkeypatch.setattr(dnsupdate, "query", fake_query)
    assert dnsupdate.find_zone(SERVER, OWNER) == ZONE
    assert asked == ["_acme-challenge.server.oe.test."]


def test_find_zone_walks_up_past_non_authoritative_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_query(server: dnsupdate.Server, name: dns.name.Name,
                   rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        if name == dns.name.from_text("sub.oe.test"):
            return _reply(name.to_text(), aa=True, soa_owner="sub.oe.test.", in_answer=True)
        return _reply(name.to_text(), aa=False, rcode=dns.rcode.REFUSED)

    monkeypatch.setattr(dnsupdate, "query", fake_query)
    assert dnsupdate.find_zone(SERVER, dns.name.from_text("_acme-challenge.a.sub.oe.test")) == \
        dns.name.from_text("sub.oe.test")


def test_find_zone_gives_up_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dnsupdate, "query", lambda *a: _reply("x.", aa=False,
                                                              rcode=dns.rcode.REFUSED))
    with pytest.raises(DnsUpdateError, match=r"not authoritative.*challenge\.dns\.zone"):
        dnsupdate.find_zone(SERVER, OWNER)


def test_wait_for_polls_until_the_value_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([set(), set(), {'"v"', '"other"'}])
    monkeypatch.setattr(dnsupdate, "current_values", lambda *a: next(answers))
    waited = dnsupdate.wait_for(SERVER, OWNER, dns.rdatatype.TXT, {'"v"'}, present=True,
                                timeout=5)
    assert 0 < waited < 1


def test_wait_for_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dnsupdate, "current_values", lambda *a: {'"v"'})
    with pytest.raises(DnsUpdateError, match=r"did not stop answering.*propagation_timeout"):
        dnsupdate.wait_for(SERVER, OWNER, dns.rdatatype.TXT, {'"v"'}, present=False,
                           timeout=0.05)


def test_a_server_that_closes_after_reading_the_update_is_a_clear_error() -> None:
    """What a DNS server killed after reading the update looks like to us (the BIND-killed
    fault test meets it when the kill lands just so): dnspython raises EOFError, which is no
    OSError and was an internal error (exit 70)."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def read_then_close() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65535)
        listener.close()

    thread = threading.Thread(target=read_then_close)
    thread.start()
    server = dnsupdate.Server("127.0.0.1", port, KEY, timeout=5)
    update = dnsupdate.build_update(ZONE, [dnsupdate.Change("add", dns01.txt_rrset(
        OWNER, 60, {"abc"}))], (), KEY)
    with pytest.raises(DnsUpdateError, match="closed the connection without answering"):
        dnsupdate.send_update(server, update)
    thread.join()
