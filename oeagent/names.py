"""Validation of the names and addresses oeagent puts on the wire, in files and in argv.

Everything that comes from config (and later from DNS or HTTPS) passes through here before any
subprocess, file path or DNS query uses it, so hostile input is rejected at the door.
"""

from __future__ import annotations

import ipaddress
import re

# fullmatch, never match with "$": "$" also matches before a trailing newline, and let
# "a\n.example.org" and the nickname "oeagent\n" through.
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_NICKNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_IPV4_CHARACTERS = frozenset("0123456789.")


def could_be_ip(text: str) -> bool:
    """False when ``text`` cannot be an address ``ipaddress`` accepts: IPv6 always has a
    colon, IPv4 is digits and dots. Discovery asks this of every peer name, and a failed
    ``ip_address`` (tried as IPv4, then as IPv6, raising each time) costs ~20 us."""
    return ":" in text or _IPV4_CHARACTERS.issuperset(text)


def normalize_fqdn(name: str) -> str:
    """Return ``name`` as a lower-case A-label FQDN without trailing dot, or raise ValueError.

    Accepts internationalised names (converted with IDNA) but refuses anything that is not a
    plain host name: wildcards, empty labels, labels over 63 octets, names over 253 octets,
    underscores, shell or path characters, NUL bytes, bare IP addresses, single labels.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("empty name")
    candidate = name[:-1] if name.endswith(".") else name
    if could_be_ip(candidate):
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            pass
        else:
            if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
                normalize_ip(candidate)  # refuses it, saying why: the zone index
            raise ValueError(f"{name!r} is an IP address, not a host name")
    if not candidate.isascii():
        # IDNA 2008 with the UTS 46 mapping (what browsers and CAs use), never Python's own
        # "idna" codec: that is IDNA 2003, which maps faß.de to fass.de and a final sigma to
        # a sigma -- other names, with other owners. Imported here: most names are ASCII.
        import idna

        try:
            candidate = idna.encode(candidate, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"{name!r} is not a valid internationalised name: {exc}") from exc
    candidate = candidate.lower()
    if len(candidate) > 253:
        raise ValueError(f"{name!r} is longer than 253 characters")
    labels = candidate.split(".")
    if len(labels) < 2:
        raise ValueError(f"{name!r} is not a fully qualified name (needs a dot)")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"{name!r} has an invalid label {label!r} "
                "(letters, digits and inner hyphens only, 1-63 characters)"
            )
    if labels[-1].isdigit():
        raise ValueError(f"{name!r} has an all-numeric top-level label")
    return candidate


def address_order(address: str) -> tuple[int, int]:
    """Sort key for address text: IPv4 before IPv6, each numerically."""
    ip = ipaddress.ip_address(address)
    return ip.version, int(ip)


SHOWN_CHARACTERS = 64


def shown(text: str) -> str:
    """``text`` fit for a message about refusing it: quoted (no escape sequence reaches a
    terminal) and cut to SHOWN_CHARACTERS with its length, so a 50 MB line is not echoed."""
    if len(text) <= SHOWN_CHARACTERS:
        return repr(text)
    return f"{text[:SHOWN_CHARACTERS]!r}... ({len(text)} characters)"


def normalize_ip(text: str) -> str:
    """Return the canonical text of an IPv4/IPv6 address (no zone index), or raise
    ValueError."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    try:
        if not could_be_ip(text):
            raise ValueError("neither digits and dots nor colons")
        address = ipaddress.ip_address(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IP address") from exc
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        # ipaddress keeps "%eth0"; pluto, certificates and DNS know no zone index, and the
        # text would reach a policy file as it stands.
        # The text shows through repr only: a zone index may hold any character.
        raise ValueError(f"{text!r} has a zone index (after the '%'); give the plain address")
    return str(address)


def check_nickname(nickname: str) -> str:
    """NSS nicknames oeagent manages: a safe, stable token (also used in file names)."""
    if not isinstance(nickname, str) or not _NICKNAME.fullmatch(nickname):
        raise ValueError(
            f"{nickname!r} is not a usable nickname "
            "(1-64 of letters, digits, '.', '_', '-', starting with a letter or digit)"
        )
    return nickname
