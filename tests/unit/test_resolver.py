"""The resolver client's own wire handling, against dnspython and a tiny in-process server."""

from __future__ import annotations

import socket
import struct
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

from oeagent import dnswire
from oeagent import resolver as dnsclient
from oeagent.resolver import MalformedReply, Resolver, Security

NAME = dns.name.from_text("_oe.Peer.Example.org.")


@pytest.mark.parametrize("rdtype", ["A", "AAAA", "TXT", "TLSA", "IPSECKEY", "PTR"])
def test_request_is_what_dnspython_renders(rdtype: str) -> None:
    qtype = dns.rdatatype.from_text(rdtype)
    expected = dns.message.make_query(NAME, qtype, want_dnssec=True, payload=1232)
    expected.flags |= dns.flags.RD | dns.flags.AD
    expected.id = 4711
    assert dnswire.request_wire(dnswire.question_wire(NAME, qtype), 4711) == expected.to_wire()


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
                   options=[dns.edns.EDEOption(ede, "signature expired")]
                   if ede is not None else [])
    return reply


QUESTION = dnswire.question_wire(NAME, dns.rdatatype.TXT)


def _read(wire: bytes, question: bytes = QUESTION) -> dnswire.Reply | None:
    return dnswire.parse_reply(wire, question, NAME)


def _same(read: dnswire.Reply | None, message: dns.message.Message) -> bool:
    """Equal, TTLs included (dnspython's RRset equality ignores them)."""
    expected = dnswire.Reply.from_message(message)
    return (read == expected and read is not None
            and [r.ttl for r in read.answer] == [r.ttl for r in expected.answer])


@pytest.mark.parametrize("ede", [None, 9])
def test_a_reply_reads_as_dnspython_reads_it(ede: int | None) -> None:
    wire = _signed_negative(ede).to_wire()
    full = dns.message.from_wire(wire)
    read = _read(wire)
    assert _same(read, full)
    assert read is not None and [r.rdtype for r in read.answer] == [5, 16]  # no RRSIGs
    assert read.extended_errors == (((9, "signature expired"),) if ede else ())
    for trusted in (True, False):
        a = dnsclient.classify(read, NAME, dns.rdatatype.TXT, trusted)
        b = dnsclient.classify(dnswire.Reply.from_message(full), NAME, dns.rdatatype.TXT,
                               trusted)
        assert (a.security, a.rrset, a.reason) == (b.security, b.rrset, b.reason)
        assert a.rrset is not None and a.rrset.name == dns.name.from_text("peer.example.org.")


_OWNERS = st.sampled_from([NAME, dns.name.from_text("peer.example.org."),
                           dns.name.from_text("_OE.peer.EXAMPLE.org."),
                           dns.name.from_text("other.example.net.")])
_RECORDS = st.sampled_from([("A", "192.0.2.7"), ("A", "198.51.100.1"), ("AAAA", "2001:db8::1"),
                            ("TXT", '"v=OE1; mode=enforce"'), ("TXT", '"a" "b"'),
                            ("CNAME", "peer.example.org."), ("CNAME", "x.example.net."),
                            ("TLSA", "3 1 1 " + "ab" * 32), ("PTR", "host.example.org."),
                            ("IPSECKEY", "10 0 2 . AQNRU3mG7TVTO2BkR47usntb102uFJtugbo6BSGvgqt4"
                                         "AQ=="),
                            ("RRSIG", None)])


@given(answers=st.lists(st.tuples(_OWNERS, _RECORDS, st.integers(0, 2**31 - 1)), max_size=8),
       rcode=st.sampled_from([0, 2, 3, 5, 16]), edns=st.booleans(),
       ede=st.lists(st.integers(0, 30), max_size=2), ad=st.booleans())
def test_any_reply_reads_as_dnspython_reads_it(
    answers: list[tuple[dns.name.Name, tuple[str, str | None], int]], rcode: int, edns: bool,
    ede: list[int], ad: bool,
) -> None:
    """Differential: whatever dnspython builds, the client reads what dnspython would."""
    reply = dns.message.make_response(dns.message.make_query(NAME, "TXT", want_dnssec=True))
    if ad:
        reply.flags |= dns.flags.AD
    for owner, (rdtype, text), ttl in answers:
        rrset = (_rrsig(owner, "TXT") if text is None
                 else dns.rrset.from_text(owner, ttl, "IN", rdtype, text))
        reply.answer.append(rrset)
    if edns or rcode > 15 or ede:
        reply.use_edns(0, dns.flags.DO, 1232, options=[dns.edns.EDEOption(c) for c in ede])
    reply.set_rcode(rcode)
    wire = reply.to_wire()
    assert _same(_read(wire), dns.message.from_wire(wire))


@given(st.integers(min_value=0, max_value=400), st.binary(max_size=8))
def test_a_damaged_reply_is_refused_never_misread(cut_at: int, junk: bytes) -> None:
    wire = _signed_negative().to_wire()
    damaged = wire[:cut_at] + junk
    try:
        read = _read(damaged)
    except (MalformedReply, dns.exception.DNSException):
        return
    try:
        full = dns.message.from_wire(damaged)
    except dns.exception.DNSException:
        return  # damage in the authority section, whose records are never read
    if read is None:  # the damage hit the question: then it asks something else
        assert (len(full.question) != 1
                or (full.question[0].name, full.question[0].rdtype) != (NAME, 16))
    else:
        assert _same(read, full)


def test_the_question_must_be_ours_in_any_letter_case() -> None:
    reply = _signed_negative().to_wire()
    upper = reply[:12] + QUESTION[:-4].upper() + reply[12 + len(QUESTION) - 4:]
    assert _read(upper) is not None  # RFC 4343: names compare without regard to case
    other_type = dnswire.question_wire(NAME, dns.rdatatype.TLSA)
    assert _read(reply, other_type) is None
    other_name = dnswire.question_wire(dns.name.from_text("_oe.peer.example.net."),
                                       dns.rdatatype.TXT)
    assert _read(reply, other_name) is None
    assert _read(reply[:4] + b"\x00\x02" + reply[6:]) is None  # two questions


def _opt_reply(options: bytes = b"", *, owner: bytes = b"\x00", count: int = 1) -> bytes:
    """The signed reply with ``options`` as its OPT record's data (dnspython writes the OPT
    last), the OPT given ``owner`` and written ``count`` times."""
    base = _signed_negative().to_wire()
    opt = base[-11:]  # root owner, type 41, class, TTL, no data
    assert opt[:3] == b"\x00\x00\x29" and opt[-2:] == b"\x00\x00"
    record = owner + opt[1:-2] + len(options).to_bytes(2, "big") + options
    arcount = int.from_bytes(base[10:12], "big") + count - 1
    return base[:10] + arcount.to_bytes(2, "big") + base[12:-11] + record * count


def _ede(code: int, text: bytes = b"") -> bytes:
    return struct.pack("!HHH", 15, 2 + len(text), code) + text


def test_extended_dns_errors_are_read_as_rfc_8914_writes_them() -> None:
    """Other options are skipped, the info code is 16 bits, a NUL ending the text is dropped."""
    cookie = struct.pack("!HH", 10, 8) + bytes(range(8))
    read = _read(_opt_reply(cookie + _ede(9, b"signature expired\x00") + _ede(49152)))
    assert read is not None
    assert read.extended_errors == ((9, "signature expired"), (49152, ""))


@pytest.mark.parametrize("wire", [
    _opt_reply(struct.pack("!HHB", 15, 1, 0)),
    _opt_reply(struct.pack("!HHH", 15, 6, 9)),
    _opt_reply(count=2),
    _opt_reply(owner=b"\xc0\x0c"),
], ids=["EDE shorter than its code", "option past the OPT's end", "two OPT records",
        "OPT not owned by the root"])
def test_a_broken_opt_record_is_refused(wire: bytes) -> None:
    with pytest.raises(MalformedReply):
        _read(wire)


def test_a_missing_record_names_only_the_records_off_the_cname_chain() -> None:
    reply = dns.message.make_response(dns.message.make_query(NAME, "TXT"))
    reply.answer.append(dns.rrset.from_text(NAME, 60, "IN", "CNAME", "peer.example.org."))
    reply.answer.append(dns.rrset.from_text("peer.example.org.", 60, "IN", "A", "192.0.2.7"))
    reply.answer.append(dns.rrset.from_text("other.example.net.", 60, "IN", "TXT", '"x"'))
    read = _read(reply.to_wire())
    assert read is not None
    answer = dnsclient.classify(read, NAME, dns.rdatatype.TXT, True)
    assert answer.rrset is None
    assert answer.reason.endswith(
        f"no such record; ignored TXT other.example.net. (not on the CNAME chain from {NAME})")


def test_a_reply_from_another_port_is_ignored() -> None:
    """An off-path spoofer must guess the resolver's address and port too, not just the ID."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    spoofer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    spoofer.bind(("127.0.0.1", 0))

    def serve() -> None:
        data, client = sock.recvfrom(4096)
        forged = dns.message.from_wire(_answer(data))
        forged.answer[0] = dns.rrset.from_text(NAME, 60, "IN", "TXT", '"forged"')
        spoofer.sendto(forged.to_wire(), client)
        sock.sendto(_answer(data), client)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        answer = dnsclient.query(Resolver("127.0.0.1", sock.getsockname()[1], timeout=2),
                                 NAME, "TXT")
    finally:
        thread.join(3)
        sock.close()
        spoofer.close()
    assert answer.values == frozenset({'"v=OE1; mode=none"'})


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
