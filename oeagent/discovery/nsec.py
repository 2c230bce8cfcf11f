"""What validated NSEC records (RFC 4035 §5.4) prove about a name that has no answer.

Pure functions over RRsets whose signatures the caller (``validate``) has already checked;
the NSEC3 counterpart is ``nsec3``. Both speak the same ``Proof`` vocabulary so the validator
turns either into one verdict.
"""

from __future__ import annotations

import enum

import dns.name
import dns.rdata
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.rdtypes.ANY.NSEC3
import dns.rrset

T = dns.rdatatype.RdataType


class Proof(enum.Enum):
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    """No such type at the name (including an empty non-terminal and wildcard NODATA)."""
    DELEGATION = "insecure delegation"
    """A DS query denied at a delegation point (NS, no DS): the child zone is unsigned."""
    OPT_OUT = "opt-out"
    """Only an opt-out NSEC3 covers the name: it may be (below) an unsigned delegation, so
    nothing is proven about it; insecure, never an authenticated denial (RFC 5155 §6, §8.6)."""


def types(rdata: dns.rdata.Rdata) -> set[int]:
    """The types in an NSEC or NSEC3 type bitmap (the same window format, RFC 4034 §4.1.2)."""
    assert isinstance(rdata, (dns.rdtypes.ANY.NSEC.NSEC, dns.rdtypes.ANY.NSEC3.NSEC3))
    found: set[int] = set()
    for window, bitmap in rdata.windows:
        for i, byte in enumerate(bitmap):
            found.update(window * 256 + i * 8 + b for b in range(8) if byte & (0x80 >> b))
    return found


def cuts_off(found: set[int], apex: bool) -> bool:
    """Records at a delegation point (NS without SOA) or a DNAME: names below are not this
    zone's, so its NSEC/NSEC3 records cannot deny them."""
    return (T.NS in found and T.SOA not in found and not apex) or T.DNAME in found


def no_type(found: set[int], qtype: int, apex: bool) -> bool:
    """A bitmap that denies ``qtype`` at its owner: neither the type nor a CNAME, and not the
    parent side of a delegation (whose other types are the child's to deny), DS excepted."""
    parent_side = T.NS in found and T.SOA not in found and not apex
    return (qtype not in found and T.CNAME not in found
            and (qtype == T.DS or not parent_side))


def _next(nsec: dns.rrset.RRset) -> dns.name.Name:
    rdata = nsec[0]
    assert isinstance(rdata, dns.rdtypes.ANY.NSEC.NSEC)
    return dns.name.Name(rdata.next.labels)


def covers(nsec: dns.rrset.RRset, name: dns.name.Name, zone: dns.name.Name) -> bool:
    """``nsec`` proves no name exists strictly between its owner and next (canonical order)."""
    owner, nxt = nsec.name, _next(nsec)
    if name.is_subdomain(owner) and name != owner and cuts_off(types(nsec[0]), owner == zone):
        return False  # names below a delegation or DNAME are not this zone's to deny
    if owner < nxt:
        return bool(owner < name < nxt)
    return bool(name > owner or name < nxt) and name.is_subdomain(zone)  # the last NSEC


def denial(qname: dns.name.Name, qtype: int, nsecs: list[dns.rrset.RRset],
           zone: dns.name.Name) -> Proof | None:
    """What validated ``nsecs`` of ``zone`` prove about (qname, qtype), or None."""
    def denies(nsec: dns.rrset.RRset) -> bool:
        return no_type(types(nsec[0]), qtype, nsec.name == zone)

    for nsec in nsecs:
        if nsec.name == qname:
            if not denies(nsec):
                return None
            if qtype == T.DS and T.NS in types(nsec[0]):
                return Proof.DELEGATION
            return Proof.NODATA
    covering = [n for n in nsecs if covers(n, qname, zone)]
    if not covering:
        return None
    nsec = covering[0]
    nxt = _next(nsec)
    if nxt.is_subdomain(qname) and nxt != qname:
        return Proof.NODATA  # an empty non-terminal: names exist below it
    common = max(qname.fullcompare(nsec.name)[2], qname.fullcompare(nxt)[2])
    encloser = qname.split(max(common, len(zone)))[1]
    wildcard = dns.name.Name((b"*", *encloser.labels))
    if any(covers(n, wildcard, zone) for n in nsecs):
        return Proof.NXDOMAIN
    if any(n.name == wildcard and denies(n) for n in nsecs):
        return Proof.NODATA  # wildcard NODATA (RFC 4035 §3.1.3.4)
    return None


def proves_absent(name: dns.name.Name, nsecs: list[dns.rrset.RRset],
                  zone: dns.name.Name) -> bool:
    """For a wildcard-expanded answer: the exact name is proven not to exist."""
    return any(covers(n, name, zone) for n in nsecs)
