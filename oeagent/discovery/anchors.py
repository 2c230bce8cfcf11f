"""Trust anchors for in-process validation, and what it takes for a key to match one.

The anchors file holds DS and/or DNSKEY records (the root's, or a private zone's); a zone's
DNSKEY RRset is trusted when a key in it matches a DS from its validated parent or an
anchor. Only algorithms and digests dnspython can check count: a zone whose DS records use
none of them is insecure (RFC 4035 §5.2), which the validator decides.
"""

from __future__ import annotations

from pathlib import Path

import dns.dnssec
import dns.exception
import dns.name
import dns.rdatatype
import dns.rrset
import dns.zonefile
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.DS import DS

from oeagent.errors import OeagentError

ALGORITHMS = frozenset({8, 10, 13, 14, 15, 16})
"""RSA/SHA-256, RSA/SHA-512, ECDSA P-256/P-384, Ed25519, Ed448: what dnspython checks."""
DIGESTS = frozenset({1, 2, 4})
_ZONE_FLAG, _REVOKE_FLAG = 0x0100, 0x0080
Anchors = dict[dns.name.Name, list[dns.rrset.RRset]]


def load_anchors(path: Path) -> Anchors:
    """DS and/or DNSKEY records in zone-file syntax (owner names absolute or under the root)."""
    try:
        rrsets = dns.zonefile.read_rrsets(path.read_text(encoding="utf-8"),
                                          origin=dns.name.root, relativize=False,
                                          rdclass=None, default_ttl=3600)
    except (OSError, UnicodeDecodeError, dns.exception.DNSException) as exc:
        raise OeagentError(f"cannot read trust anchors from {path}: {exc}") from None
    anchors: Anchors = {}
    for rrset in rrsets:
        if rrset.rdtype in (dns.rdatatype.DS, dns.rdatatype.DNSKEY):
            anchors.setdefault(rrset.name, []).append(rrset)
    if not anchors:
        raise OeagentError(f"{path} holds no DS or DNSKEY record")
    return anchors


def usable_key(key: DNSKEY) -> bool:
    """A zone key that is not revoked (RFC 5011): the only kind that may sign the zone."""
    return bool(key.flags & _ZONE_FLAG) and not key.flags & _REVOKE_FLAG


def ds_matches(zone: dns.name.Name, key: DNSKEY, ds: DS) -> bool:
    if key.algorithm != ds.algorithm or dns.dnssec.key_id(key) != ds.key_tag:
        return False
    try:
        made = dns.dnssec.make_ds(zone, key, ds.digest_type,
                                  policy=dns.dnssec.allow_all_policy, validating=True)
    except (dns.exception.UnsupportedAlgorithm, dns.exception.DeniedByPolicy, ValueError):
        return False
    return bool(made == ds)
