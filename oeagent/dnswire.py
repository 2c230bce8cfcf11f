"""The DNS wire format, as much of it as the resolver client writes and reads.

Discovery is CPU-bound in this client (a peer costs 3 to 6 queries), and dnspython's general
``Message`` costs most of a query's CPU: building the query (``make_query`` + ``to_wire``,
~0.1 ms) and parsing the reply (``from_wire``, ~0.2 ms), which turns every name and record
into objects although the client reads only the rcode, the flags, the EDNS options and the
answer RRsets (a validating resolver's AD bit vouches for them; their RRSIGs and the
authority section's SOA and NSEC records are the resolver's business). So the query is
written here byte for byte as dnspython renders it, and a reply is read here: the header,
the question compared as bytes, the answer records built into dnspython RRsets (its rdata
classes still parse each record's data), the authority section skipped, the OPT record's
extended rcode and Extended DNS Errors read. Anything that does not hold together raises
``MalformedReply`` or dnspython's ``DNSException``; nothing damaged is half read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dns.flags
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

if TYPE_CHECKING:
    # Only for the hint: not building a Message is this module's point, and importing
    # dns.message is ~10 ms of every discovery's start-up.
    import dns.message

_HEADER = struct.Struct("!HHHHHH")
_RECORD = struct.Struct("!HHIH")  # type, class, TTL, data length
_OPTION = struct.Struct("!HH")  # EDNS option code, length
_RD_AD = 0x0100 | 0x0020
# OPT: root owner, type 41, UDP payload 1232, extended rcode 0, version 0, DO, no options.
_OPT_DO = b"\x00" + _RECORD.pack(41, 1232, 0x8000, 0)
_POINTER_TO_QUESTION = b"\xc0\x0c"  # the answer's owner is, nearly always, the question's name
_EDE = 15  # RFC 8914 Extended DNS Error option code


class MalformedReply(Exception):
    """A reply whose sections do not hold together."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What the resolver client reads of a reply."""

    flags: int
    rcode: dns.rcode.Rcode
    """Including the OPT record's extended rcode bits."""
    answer: tuple[dns.rrset.RRset, ...]
    """The answer section's RRsets in order, without RRSIGs."""
    extended_errors: tuple[tuple[int, str], ...] = ()
    """(info code, text) of every Extended DNS Error option."""

    def find(self, name: dns.name.Name, rdtype: int) -> dns.rrset.RRset | None:
        for rrset in self.answer:
            if (rrset.rdtype == rdtype and rrset.rdclass == dns.rdataclass.IN
                    and rrset.name == name):
                return rrset
        return None

    @classmethod
    def from_message(cls, message: dns.message.Message) -> Reply:
        """The same view of a reply dnspython parsed (TCP, in-process validation)."""
        return cls(message.flags, message.rcode(),
                   tuple(r for r in message.answer if r.rdtype != dns.rdatatype.RRSIG),
                   tuple((int(e.code), e.text or "") for e in message.extended_errors()))


def question_wire(qname: dns.name.Name, qtype: int) -> bytes:
    name = qname.to_wire()
    assert name is not None  # None only when writing into a file
    return name + struct.pack("!HH", qtype, dns.rdataclass.IN)


def request_wire(question: bytes, qid: int) -> bytes:
    """The query dnspython's ``make_query(qname, qtype, want_dnssec=True, payload=1232)``
    renders with RD and AD set (tests check it byte for byte)."""
    return _HEADER.pack(qid, _RD_AD, 1, 0, 0, 1) + question + _OPT_DO


def parse_reply(wire: bytes, question: bytes, qname: dns.name.Name) -> Reply | None:
    """Read a reply to ``question`` (as ``question_wire`` wrote it); None when it answers
    another question. The caller has checked the ID and the QR bit."""
    if len(wire) < 12:
        raise MalformedReply("shorter than a DNS header")
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
    end = 12 + len(question)
    name_end = end - 4
    # The name compares without regard to ASCII case (RFC 4343); type and class exactly.
    if (qdcount != 1 or wire[12:name_end].lower() != question[:-4].lower()
            or wire[name_end:end] != question[-4:]):
        return None
    at = end
    # Keyed by owner, except that the question's name is None: a Name hashes all its labels
    # on every use, and nearly every record is the question name's.
    rrsets: dict[tuple[dns.name.Name | None, int, int], dns.rrset.RRset] = {}
    try:
        for _ in range(ancount):
            owner_key: dns.name.Name | None = None
            if wire[at:at + 2] == _POINTER_TO_QUESTION:
                owner, at = qname, at + 2
            else:
                owner, used = dns.name.from_wire(wire, at)
                at += used
                if owner != qname:
                    owner_key = owner
            rdtype, rdclass, ttl, length = _RECORD.unpack_from(wire, at)
            at += 10
            if at + length > len(wire):
                raise MalformedReply("a record runs past the end of the message")
            if rdtype == dns.rdatatype.OPT:
                raise MalformedReply("an OPT record in the answer section")
            if rdtype != dns.rdatatype.RRSIG:
                rdata = dns.rdata.from_wire(rdclass, rdtype, wire, at, length)
                key = (owner_key, rdclass, rdtype)
                rrset = rrsets.get(key)
                if rrset is None:
                    rrset = rrsets[key] = dns.rrset.RRset(owner, rdclass, rdtype)
                rrset.add(rdata, ttl)
            at += length
        for _ in range(nscount):
            at = _skip_record(wire, at)[1]
        ext_rcode, errors, seen_opt = 0, [], False
        for _ in range(arcount):
            start = at
            rdtype, at = _skip_record(wire, at)
            if rdtype != dns.rdatatype.OPT:
                continue
            if seen_opt or wire[start] != 0:
                raise MalformedReply("more than one OPT record, or one not owned by the root")
            seen_opt = True
            _, _, ttl, length = _RECORD.unpack_from(wire, start + 1)
            ext_rcode = ttl >> 24
            errors = _extended_errors(wire[start + 11:start + 11 + length])
    except (IndexError, struct.error):
        raise MalformedReply("a record runs past the end of the message") from None
    if at != len(wire):
        raise MalformedReply("a record runs past the end of the message" if at > len(wire)
                             else "trailing data after the last record")
    return Reply(flags, dns.rcode.Rcode.make((ext_rcode << 4) | (flags & 0xF)),
                 tuple(rrsets.values()),
                 tuple(errors))


def truncated(reply: Reply) -> bool:
    return bool(reply.flags & dns.flags.TC)


def _extended_errors(options: bytes) -> list[tuple[int, str]]:
    errors = []
    at = 0
    while at < len(options):
        code, length = _OPTION.unpack_from(options, at)
        data = options[at + 4:at + 4 + length]
        if len(data) != length:
            raise MalformedReply("an EDNS option runs past the end of the OPT record")
        at += 4 + length
        if code == _EDE:
            if length < 2:
                raise MalformedReply("an Extended DNS Error option shorter than its code")
            text = data[2:].removesuffix(b"\x00")  # some servers NUL-terminate it
            errors.append((int.from_bytes(data[:2], "big"), text.decode("utf-8", "replace")))
    return errors


def _skip_name(wire: bytes, at: int) -> int:
    while True:
        length = wire[at]
        if length == 0:
            return at + 1
        if length & 0xC0 == 0xC0:
            return at + 2
        if length & 0xC0:
            raise MalformedReply("unknown label type")
        at += length + 1


def _skip_record(wire: bytes, at: int) -> tuple[int, int]:
    """The record's type and where the next record starts."""
    at = _skip_name(wire, at)
    rdtype, _, _, length = _RECORD.unpack_from(wire, at)
    return rdtype, at + 10 + length
