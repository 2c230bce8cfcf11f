"""The resolver client's own wire handling, against dnspython and a tiny in-process server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oeagent import resolver as dnsclient
from oeagent.resolver import MalformedReply, Resolver, Security

NAME = dns.name.from_text("_oe.Peer.Example.org.")


@pytest.mark.parametrize("rdtype", ["A", "AAAA", "TXT", "TLSA", "IPSECKEY", "PTR"])
def test_request_is_what_dnspython_renders(rdtype: str) -> None:
    qtype = dns.rdatatype.from_text(rdtype)
    expected = dns.message.make_query(NAME, qtype, want_dnssec=True, payload=1232)
    expected.flags |= dns.flags.RD | dns.flags.AD
    expected.id = 4711
    assert dnsclient.request_wire(NAME, qtype, 4711) == expected.to_wire()


def _rrsig(owner: dns.name.Name | str, covered: str) -> dns.rrset.RRset:
    return dns.rrset.from_text(owner, 60, "IN", "RRSIG",
                               f"{covered} 13 2 60 20270101000000 20260101000000 1 example.org. "
                               + "A" * 86 + "==")


def _signed_negative(ede: int | None = None) -> dns.message.Message:
    """A validated reply with all a signed zone adds: RRSIGs after the CNAME and the answer,
    SOA and NSEC with RRSIGs in authority, glue in additional."""
    reply = dns.message.make_response(dns.message.make_query(NAME, "TXT", want_dnssec=True))
    reply.flags |= dns.flags.AD
    reply.answer.append(dns.rrset.from_text(NAME, 60, "IN", "CNAME", "peer.example.org."))
    reply.answer.append(_rrsig(NAME, "CNAME"))
    reply.answer.append(dns.rrset.from_text("peer.example.org.", 60, "IN", "TXT", '"x"'))
    reply.answer.append(_rrsig("peer.example.org.", "TXT"))
    reply.authority.append(dns.rrset.from_text(
        "example.org.", 60, "IN", "SOA", "ns.example.org. host.example.org. 1 2 3 4 5"))
    reply.authority.append(_rrsig("example.org.", "SOA"))
    reply.authority.append(dns.rrset.from_text(
        "peer.example.org.", 60, "IN", "NSEC", "z.example.org. A RRSIG NSEC"))
    reply.additional.append(dns.rrset.from_text("ns.example.org.", 60, "IN", "A", "127.0.0.9"))
    reply.use_edns(0, dns.flags.DO, 1232,
                   options=[dns.edns.EDEOption(ede)] if ede is not None else [])
    return reply


@pytest.mark.parametrize("ede", [None, 9])
def test_cutting_unread_records_keeps_what_classify_reads(ede: int | None) -> None:
    reply = _signed_negative(ede)
    full = dns.message.from_wire(reply.to_wire())
    cut = dns.message.from_wire(dnsclient._cut_unread(reply.to_wire()))
    assert cut.id == full.id and cut.flags == full.flags and cut.rcode() == full.rcode()
    assert cut.question == full.question
    assert cut.answer == full.answer[:3]  # the RRSIG after the CNAME stays, the last one goes
    assert [e.code for e in cut.extended_errors()] == [e.code for e in full.extended_errors()]
    assert cut.authority == [] and cut.edns == 0 and cut.ednsflags & dns.flags.DO
    for trusted in (True, False):
        a = dnsclient.classify(cut, NAME, dns.rdatatype.TXT, trusted)
        b = dnsclient.classify(full, NAME, dns.rdatatype.TXT, trusted)
        assert (a.security, a.rrset, a.reason) == (b.security, b.rrset, b.reason)


@given(st.integers(min_value=0, max_value=400), st.binary(max_size=8))
def test_a_damaged_reply_is_refused_never_misread(cut_at: int, junk: bytes) -> None:
    wire = _signed_negative().to_wire()
    damaged = wire[:cut_at] + junk
    try:
        trimmed = dnsclient._cut_unread(damaged)
    except MalformedReply:
        return
    try:
        message = dns.message.from_wire(trimmed)
    except dns.exception.DNSException:
        return
    try:
        full = dns.message.from_wire(damaged)
    except dns.exception.DNSException:
        return  # damage past the answer section, which is never read
    rrsets = [r for r in full.answer if r.rdtype != dns.rdatatype.RRSIG]
    assert [r for r in message.answer if r.rdtype != dns.rdatatype.RRSIG] == rrsets


@pytest.fixture
def server() -> Iterator[Callable[[Callable[[bytes], list[bytes]]], Resolver]]:
    """A UDP responder on loopback: ``handler(query) -> datagrams to send back``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    threads: list[threading.Thread] = []

    def start(handler: Callable[[bytes], list[bytes]]) -> Resolver:
        def serve() -> None:
            data, client = sock.recvfrom(4096)
            for datagram in handler(data):
                sock.sendto(datagram, client)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return Resolver("127.0.0.1", sock.getsockname()[1], timeout=2)

    yield start
    sock.close()
    for thread in threads:
        thread.join(3)


def _answer(query: bytes, *, qid_delta: int = 0, name: str | None = None) -> bytes:
    q = dns.message.from_wire(query)
    reply = dns.message.make_response(q)
    reply.flags |= dns.flags.AD
    reply.id = (q.id + qid_delta) % 65536
    owner = name or str(q.question[0].name)
    if name is not None:
        reply.question = [dns.rrset.RRset(dns.name.from_text(name), 1, q.question[0].rdtype)]
    reply.answer.append(dns.rrset.from_text(owner, 60, "IN", "TXT", '"v=OE1; mode=none"'))
    return reply.to_wire()


def test_replies_to_another_id_or_question_are_ignored(
    server: Callable[[Callable[[bytes], list[bytes]]], Resolver],
) -> None:
    resolver = server(lambda q: [b"\x00", _answer(q, qid_delta=1),
                                 _answer(q, name="other.example.org."), _answer(q)])
    answer = dnsclient.query(resolver, NAME, "TXT")
    assert answer.security is Security.SECURE and answer.rrset is not None
    assert answer.rrset.name == NAME


def test_no_reply_is_unreachable_after_the_timeout(
    server: Callable[[Callable[[bytes], list[bytes]]], Resolver],
) -> None:
    resolver = server(lambda q: [_answer(q, qid_delta=1)])
    answer = dnsclient.query(Resolver(resolver.address, resolver.port, timeout=0.3), NAME, "TXT")
    assert answer.security is Security.UNREACHABLE and "timed out" in answer.reason


def test_a_truncated_reply_is_asked_again_over_tcp() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", port))
    tcp.listen(1)

    def serve() -> None:
        data, client = udp.recvfrom(4096)
        truncated = dns.message.make_response(dns.message.from_wire(data))
        truncated.flags |= dns.flags.TC
        udp.sendto(truncated.to_wire(), client)
        conn, _ = tcp.accept()
        with conn:
            length = int.from_bytes(conn.recv(2), "big")
            query = conn.recv(length)
            reply = _answer(query)
            conn.sendall(len(reply).to_bytes(2, "big") + reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        answer = dnsclient.query(Resolver("127.0.0.1", port, timeout=2), NAME, "TXT")
    finally:
        thread.join(3)
        udp.close()
        tcp.close()
    assert answer.security is Security.SECURE and answer.rrset is not None


def test_publishing_reads_the_same_answer(
    server: Callable[[Callable[[bytes], list[bytes]]], Resolver],
) -> None:
    """publish --verify compares values and the AD bit, and reports them in one line."""
    resolver = server(lambda q: [_answer(q)])
    answer = dnsclient.query(resolver, NAME, dns.rdatatype.TXT)
    assert answer.secure and answer.values == frozenset({'"v=OE1; mode=none"'})
    assert answer.describe() == "NOERROR, AD, 1 record(s)"
    silent = dnsclient.query(Resolver("127.0.0.1", resolver.port, timeout=0.2), NAME, "TXT")
    assert not silent.secure and silent.values == frozenset()
    assert silent.describe().startswith("UNREACHABLE, no AD, 0 record(s) (TXT")
