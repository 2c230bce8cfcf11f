"""Reading the DNS form of an advertisement: owner names and strict readers.

oeagent's convention (README "Advertisement formats"; ``oeagent.publish.records`` builds the
records): TLSA ``3 1 1 <SPKI SHA-256>`` at ``_500._udp.<fqdn>`` and ``_4500._udp.<fqdn>``,
one per pinned key; IPSECKEY ``10 0 3 . <X||Y>`` (ECDSA P-256, RFC 6605) or algorithm 2
(RSA, RFC 3110) at ``<fqdn>``; and the TXT ``_oe.<fqdn>``. The readers turn hostile record
data back into pins and an auth method, or raise.
"""

from __future__ import annotations

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TLSA
import dns.rdtypes.IN.IPSECKEY
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from oeagent import keys
from oeagent.advertisement import TXT_LABEL, AdvertisementError

IPSECKEY_ECDSA = 3
IPSECKEY_RSA = 2
AUTH_BY_ALGORITHM = {IPSECKEY_ECDSA: "ecdsa", IPSECKEY_RSA: "rsasig"}
MAX_RRSET = 16
"""Most records of one TLSA, IPSECKEY or ``_oe`` TXT RRset that discovery reads; a larger
RRset is refused whole. A publisher puts out one per pinned key (two during a rollover), so
16 is generous; the bound keeps a 64 KiB reply (over a thousand records) from costing a
thousand key decodes and from choosing pins out of a crowd."""


# Built from the peer's name already parsed (Name checks the labels and the length, as
# from_text would): discovery asks these for every peer.
_TXT_LABEL = TXT_LABEL.encode()
_TLSA_LABELS = {port: (f"_{port}".encode(), b"_udp") for port in (500, 4500)}


def txt_name(name: dns.name.Name | str) -> dns.name.Name:
    """``_oe.<name>``, where the advertisement's TXT record is (``name``: a host's FQDN)."""
    return dns.name.Name((_TXT_LABEL, *_absolute(name).labels))


def tlsa_name(name: dns.name.Name | str, port: int) -> dns.name.Name:
    """``_<port>._udp.<name>``, where a pin is."""
    labels = _TLSA_LABELS.get(port) or (f"_{port}".encode(), b"_udp")
    return dns.name.Name((*labels, *_absolute(name).labels))


def _absolute(name: dns.name.Name | str) -> dns.name.Name:
    return name if isinstance(name, dns.name.Name) else dns.name.from_text(f"{name}.")


def tlsa_pin(rdata: dns.rdtypes.ANY.TLSA.TLSA) -> str | None:
    """The SPKI SHA-256 pin of a ``3 1 1`` record; None for any other usage (ignored)."""
    if (rdata.usage, rdata.selector, rdata.mtype) != (3, 1, 1) or len(rdata.cert) != 32:
        return None
    return rdata.cert.hex()


def ipseckey_public(rdata: dns.rdtypes.IN.IPSECKEY.IPSECKEY) -> tuple[str, str]:
    """(auth method, SPKI pin) of an IPSECKEY with gateway type 0, or AdvertisementError."""
    if rdata.gateway_type != 0:
        raise AdvertisementError("IPSECKEY names a gateway; oeagent expects gateway type 0")
    key = rdata.key
    public: keys.PublicKey
    try:
        if rdata.algorithm == IPSECKEY_ECDSA:
            if len(key) != 64:
                raise AdvertisementError("IPSECKEY ECDSA key is not 64 bytes (P-256 X||Y)")
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + key)
        elif rdata.algorithm == IPSECKEY_RSA:
            if not key:
                raise AdvertisementError("IPSECKEY RSA key is empty")
            if key[0]:
                elen, rest = key[0], key[1:]
            else:
                elen, rest = int.from_bytes(key[1:3], "big"), key[3:]
            exponent, modulus = rest[:elen], rest[elen:]
            if not exponent or len(modulus) < 256:
                raise AdvertisementError("IPSECKEY RSA key is malformed or shorter than 2048 bits")
            public = rsa.RSAPublicNumbers(
                int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big")
            ).public_key()
        else:
            raise AdvertisementError(f"IPSECKEY algorithm {rdata.algorithm} is not 2 or 3")
    except ValueError as exc:
        raise AdvertisementError(f"IPSECKEY key does not decode: {exc}") from None
    return AUTH_BY_ALGORITHM[rdata.algorithm], keys.spki_sha256(public)
