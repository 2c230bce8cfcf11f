"""The DNS form of an advertisement: TLSA, IPSECKEY and the ``_oe`` TXT, as dnspython rrsets.

Pure functions (no network), shared by the ``rfc2136`` and ``zonefile`` backends so both
publish exactly the same records. oeagent's conventions (README "Advertisement formats"):

- TLSA ``3 1 1 <SHA-256 of the SPKI>`` at ``_<port>._udp.<fqdn>`` for each IKE port, one
  record per pinned key (DANE-EE/SPKI survives renewals that keep the key);
- IPSECKEY ``<precedence> 0 <alg> . <key>`` at ``<fqdn>`` (and at the reverse names of the
  addresses when asked), algorithm 3 (ECDSA P-256, RFC 6605: X||Y) or 2 (RSA, RFC 3110), the
  form libreswan accepts; the current key has precedence 10, a next key 20;
- TXT ``v=OE1; id=...; mode=...`` at ``_oe.<fqdn>``.

In mode ``none`` only the TXT remains: the host says "no longer", and clients release it.
"""

from __future__ import annotations

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TLSA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.IPSECKEY
import dns.reversename
import dns.rrset
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from oeagent import keys
from oeagent.advertisement import TXT_LABEL, VERSION, Advertisement

RRsetKey = tuple[dns.name.Name, dns.rdatatype.RdataType]
TXT = dns.rdatatype.TXT
TLSA = dns.rdatatype.TLSA
IPSECKEY = dns.rdatatype.IPSECKEY
IPSECKEY_PRECEDENCE = (10, 20)  # current key, then the next key during a rollover


def ipseckey_algorithm_and_key(key: keys.PublicKey) -> tuple[int, bytes]:
    """IPSECKEY algorithm number and public-key field for ``key``."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"IPSECKEY carries P-256 ECDSA keys only, not {key.curve.name}")
        point = key.public_numbers()
        return 3, point.x.to_bytes(32, "big") + point.y.to_bytes(32, "big")
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        exponent = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        modulus = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        # RFC 3110 §2: one length octet, or zero and two octets for longer exponents.
        prefix = (bytes([len(exponent)]) if len(exponent) < 256
                  else b"\x00" + len(exponent).to_bytes(2, "big"))
        return 2, prefix + exponent + modulus
    raise ValueError(f"no IPSECKEY form for a {type(key).__name__}")


def auth_method(key: keys.PublicKey | keys.PrivateKey) -> str:
    """What pluto needs in ``leftauth=``/``rightauth=`` for this key."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"only P-256 ECDSA keys can be advertised, not {key.curve.name}")
        return "ecdsa"
    return "rsasig"


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def txt_owner(fqdn: str) -> dns.name.Name:
    return name(f"{TXT_LABEL}.{fqdn}")


def tlsa_owner(fqdn: str, port: int) -> dns.name.Name:
    return name(f"_{port}._udp.{fqdn}")


def reverse_owners(addresses: tuple[str, ...]) -> list[dns.name.Name]:
    return [dns.reversename.from_address(a) for a in addresses]


def managed_rrsets(fqdn: str, ike_ports: tuple[int, ...], addresses: tuple[str, ...],
                   reverse: bool) -> list[RRsetKey]:
    """Every (name, type) oeagent may hold records in for this host, published or not."""
    owned: list[RRsetKey] = [(txt_owner(fqdn), TXT)]
    owned += [(tlsa_owner(fqdn, port), TLSA) for port in ike_ports]
    owned.append((name(fqdn), IPSECKEY))
    if reverse:
        owned += [(owner, IPSECKEY) for owner in reverse_owners(addresses)]
    return owned


def _rrset(owner: dns.name.Name, ttl: int, rdatas: list[dns.rdata.Rdata]) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(owner, ttl, rdatas)


def dns_rrsets(advert: Advertisement, public_keys: tuple[keys.PublicKey, ...], ttl: int,
               reverse: bool) -> dict[RRsetKey, dns.rrset.RRset]:
    """The rrsets that advertise ``advert``; ``public_keys`` are the pinned keys, in order."""
    txt = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, TXT, [advert.txt().encode("ascii")])
    wanted = {(txt_owner(advert.fqdn), TXT): _rrset(txt_owner(advert.fqdn), ttl, [txt])}
    if advert.mode == "none":
        return wanted
    if [keys.spki_sha256(k) for k in public_keys] != list(advert.pins):
        raise ValueError("the keys given do not match the advertisement's pins")
    tlsa = [dns.rdtypes.ANY.TLSA.TLSA(  # type: ignore[no-untyped-call]
                dns.rdataclass.IN, TLSA, 3, 1, 1, bytes.fromhex(pin))
            for pin in advert.pins]
    for port in advert.ike_ports:
        owner = tlsa_owner(advert.fqdn, port)
        wanted[(owner, TLSA)] = _rrset(owner, ttl, list(tlsa))
    ipseckeys: list[dns.rdata.Rdata] = []
    for precedence, key in zip(IPSECKEY_PRECEDENCE, public_keys, strict=False):
        algorithm, key_bytes = ipseckey_algorithm_and_key(key)
        ipseckeys.append(dns.rdtypes.IN.IPSECKEY.IPSECKEY(  # type: ignore[no-untyped-call]
            dns.rdataclass.IN, IPSECKEY, precedence, 0, algorithm, None, key_bytes))
    owners = [name(advert.fqdn)]
    if reverse:
        owners += reverse_owners(advert.addresses)
    for owner in owners:
        wanted[(owner, IPSECKEY)] = _rrset(owner, ttl, list(ipseckeys))
    return wanted


def is_convention_value(rdtype: dns.rdatatype.RdataType, rdata: dns.rdata.Rdata) -> bool:
    """Values that are oeagent's by convention even if no record says we published them:
    an ``v=OE1`` TXT at ``_oe`` and a ``3 1 1`` TLSA at an IKE port name."""
    if rdtype == TXT:
        text = b"".join(rdata.strings)  # type: ignore[attr-defined]
        return text.startswith(f"v={VERSION};".encode())
    if rdtype == TLSA:
        return (rdata.usage, rdata.selector, rdata.mtype) == (3, 1, 1)  # type: ignore[attr-defined]
    return False


def zone_lines(rrsets: dict[RRsetKey, dns.rrset.RRset]) -> list[str]:
    """Zone-file lines (absolute names), sorted so a rewrite with the same content is equal."""
    lines: list[str] = []
    for key in sorted(rrsets, key=lambda k: (k[0].to_text(), int(k[1]))):
        lines += sorted(rrsets[key].to_text().splitlines())
    return lines
