"""BIND 9.18 as the lab's authoritative server: a DNSSEC-signed zone that takes TSIG updates.

``oe.test`` is signed by ``dnssec-policy`` with inline signing (one ECDSA P-256 CSK) and
accepts RFC 2136 updates signed with the lab's TSIG key; ``plain.test`` is the same but
unsigned, for tests that need an insecure answer. Every record the ACME CA resolves points at
127.0.0.1, so http-01 lands on the lab's loopback port and never leaves the machine.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from lab.procs import LabError

ZONE = "oe.test"
PLAIN_ZONE = "plain.test"
# Delegations below the signed zone, for discovery tests: an insecure one (no DS), a bogus
# one (a DS that matches no key: validation fails), and a lame one (its name server is an
# unused loopback address, so resolution times out or is refused).
INSECURE_CHILD = f"insecure.{ZONE}"
BOGUS_CHILD = f"bogus.{ZONE}"
LAME_CHILD = f"lame.{ZONE}"
LAME_NS_ADDRESS = "127.0.0.99"
# A zone that refuses every update (no update-policy): publishing there must fail cleanly.
LOCKED_ZONE = "locked.test"
# Reverse zones for IPSECKEY at reverse names (RFC 4025): a signed one, anchored in unbound
# like oe.test, for 192.0.2.0/24, and one refusing updates for 203.0.113.0/24
# (198.51.100.0/24 is left to the namespaced hosts of the end-to-end lab).
REVERSE_ZONE = "2.0.192.in-addr.arpa"
LOCKED_REVERSE_ZONE = "113.0.203.in-addr.arpa"
LOCKED_ZONES = (LOCKED_ZONE, LOCKED_REVERSE_ZONE)
# Zones that deny with NSEC3 (RFC 5155) instead of NSEC, for in-process validation's NSEC3
# proofs: one without opt-out, one with opt-out; each delegates to an unsigned child, so the
# insecure delegation is proven by an NSEC3 matching it (NS, no DS) in the first and by the
# opt-out NSEC3 covering it in the second.
NSEC3_ZONE = "nsec3.test"
OPTOUT_ZONE = "optout.test"
NSEC3_INSECURE_CHILD = f"insecure.{NSEC3_ZONE}"
OPTOUT_INSECURE_CHILD = f"insecure.{OPTOUT_ZONE}"
# Signed zones whose trust anchor (DS) unbound is given directly: they have no signed parent.
ANCHORED_ZONES = (ZONE, REVERSE_ZONE, NSEC3_ZONE, OPTOUT_ZONE)
# A well-formed DS (key tag 1, ECDSA P-256, SHA-256) whose digest matches no key.
_BOGUS_DS = f"1 13 2 {'5A' * 32}"
TSIG_KEY_NAME = "oeagent-lab"
TSIG_ALGORITHM = "hmac-sha256"
HOSTS = ("server", "www", "alt", "peer")

# A lab policy: the default's algorithm (ECDSA P-256 CSK) with short, lab-sized timings;
# "lab-nsec3" and "lab-optout" are the same with NSEC3 as RFC 9276 recommends (no extra
# iterations, no salt), without and with opt-out.
_POLICY_BODY = """\
    keys { csk lifetime unlimited algorithm ecdsap256sha256; };
    dnskey-ttl 60;
    max-zone-ttl 300;
    zone-propagation-delay 1;
    publish-safety 1;
    retire-safety 1;
    signatures-refresh 5d;
    signatures-validity 14d;
    signatures-validity-dnskey 14d;
    parent-ds-ttl 60;
    parent-propagation-delay 1;
"""
_POLICIES = {
    "lab": "",
    "lab-nsec3": "    nsec3param iterations 0 optout no salt-length 0;\n",
    "lab-optout": "    nsec3param iterations 0 optout yes salt-length 0;\n",
}
_POLICY = "".join(f'dnssec-policy "{name}" {{\n{_POLICY_BODY}{extra}}};\n'
                  for name, extra in _POLICIES.items())


def write_tsig_key(path: Path) -> None:
    """Write a fresh hmac-sha256 key in BIND's key-file syntax, mode 0600."""
    try:
        out = subprocess.run(
            ["tsig-keygen", "-a", TSIG_ALGORITHM, TSIG_KEY_NAME],
            check=True, capture_output=True, text=True, timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise LabError(f"tsig-keygen failed: {exc}") from exc
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(out)


def _zone_text(zone: str) -> str:
    lines = [
        "$TTL 60",
        f"@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 60",
        f"@ IN NS ns.{zone}.",
        "ns IN A 127.0.0.1",
        "@ IN A 127.0.0.1",
        *(f"{host} IN A 127.0.0.1" for host in HOSTS),
        # Any other name resolves too, so tests can invent host names freely.
        "* IN A 127.0.0.1",
    ]
    if zone == ZONE:
        lines += [
            f"{INSECURE_CHILD}. IN NS ns.{ZONE}.",
            f"{BOGUS_CHILD}. IN NS ns.{ZONE}.",
            f"{BOGUS_CHILD}. IN DS {_BOGUS_DS}",
            f"{LAME_CHILD}. IN NS ns.{LAME_CHILD}.",
            f"ns.{LAME_CHILD}. IN A {LAME_NS_ADDRESS}",
        ]
    if zone in (NSEC3_ZONE, OPTOUT_ZONE):
        lines.append(f"insecure.{zone}. IN NS ns.{zone}.")
    return "\n".join(lines) + "\n"


# (zone, dnssec-policy or None for unsigned) for every zone this BIND serves.
SERVED_ZONES: tuple[tuple[str, str | None], ...] = (
    (ZONE, "lab"), (PLAIN_ZONE, None), (INSECURE_CHILD, None), (BOGUS_CHILD, "lab"),
    (LOCKED_ZONE, None), (REVERSE_ZONE, "lab"), (LOCKED_REVERSE_ZONE, None),
    (NSEC3_ZONE, "lab-nsec3"), (NSEC3_INSECURE_CHILD, None),
    (OPTOUT_ZONE, "lab-optout"), (OPTOUT_INSECURE_CHILD, None),
)


def write_config(bind_dir: Path, port: int, tsig_key_file: Path,
                 address: str = "127.0.0.1") -> Path:
    """Write named.conf and the zone files under ``bind_dir``; return the named.conf path."""
    bind_dir.mkdir(parents=True, exist_ok=True)
    keys_dir = bind_dir / "keys"
    keys_dir.mkdir(exist_ok=True)
    zones = []
    for zone, policy in SERVED_ZONES:
        (bind_dir / f"{zone}.zone").write_text(_zone_text(zone))
        signing = f'    dnssec-policy "{policy}";\n    inline-signing yes;\n' if policy else ""
        updates = (f"    update-policy {{ grant {TSIG_KEY_NAME} zonesub ANY; }};\n"
                   if zone not in LOCKED_ZONES else "    allow-update { none; };\n")
        zones.append(
            f'zone "{zone}" {{\n'
            "    type primary;\n"
            f'    file "{bind_dir}/{zone}.zone";\n'
            f'    key-directory "{keys_dir}";\n'
            f"{signing}"
            f"{updates}"
            "};\n"
        )
    conf = bind_dir / "named.conf"
    conf.write_text(
        f'include "{tsig_key_file}";\n'
        "controls { };\n"
        f"{_POLICY}"
        "options {\n"
        f'    directory "{bind_dir}";\n'
        f'    pid-file "{bind_dir}/named.pid";\n'
        f'    session-keyfile "{bind_dir}/session.key";\n'
        f'    managed-keys-directory "{bind_dir}";\n'
        f'    dump-file "{bind_dir}/named_dump.db";\n'
        f'    statistics-file "{bind_dir}/named.stats";\n'
        f"    listen-on port {port} {{ {address}; }};\n"
        "    listen-on-v6 { none; };\n"
        "    recursion no;\n"
        "    dnssec-validation no;\n"
        "    notify no;\n"
        "    allow-transfer { none; };\n"
        "    querylog yes;\n"
        "};\n"
        + "".join(zones)
    )
    try:
        subprocess.run(
            ["named-checkconf", str(conf)], check=True, capture_output=True, text=True, timeout=10
        )
    except subprocess.CalledProcessError as exc:
        raise LabError(f"named-checkconf rejected {conf}:\n{exc.stdout}{exc.stderr}") from exc
    return conf


def argv(conf: Path) -> list[str]:
    # -g: foreground, log to stderr; -4: the lab is IPv4 loopback only; -n 2: two worker threads.
    return ["named", "-g", "-4", "-n", "2", "-c", str(conf)]


def query(
    port: int, name: str, rdtype: str, *, dnssec: bool = True, tcp: bool = False,
    timeout: float = 2.0, address: str = "127.0.0.1",
) -> dns.message.Message:
    """Ask the lab's BIND directly (no recursion), with DO set unless ``dnssec`` is False."""
    msg = dns.message.make_query(name, rdtype, want_dnssec=dnssec)
    msg.flags &= ~dns.flags.RD
    if tcp:
        return dns.query.tcp(msg, address, port=port, timeout=timeout)
    return dns.query.udp(msg, address, port=port, timeout=timeout)


def zone_is_signed(port: int, address: str = "127.0.0.1") -> bool:
    """Ready: the signed zone answers its SOA with an RRSIG, and the unsigned zone answers too."""
    reply = query(port, ZONE, "SOA", timeout=0.5, address=address)
    if reply.rcode() != dns.rcode.NOERROR:
        return False
    if not any(rrset.rdtype == dns.rdatatype.RRSIG for rrset in reply.answer):
        return False
    for zone, policy in SERVED_ZONES:
        signed = policy is not None
        reply = query(port, zone, "SOA", dnssec=signed, timeout=0.5, address=address)
        if reply.rcode() != dns.rcode.NOERROR or not reply.answer:
            return False
        if signed and not any(r.rdtype == dns.rdatatype.RRSIG for r in reply.answer):
            return False
        # BIND publishes the NSEC3PARAM once the NSEC3 chain is complete: until then the
        # zone would still deny with NSEC.
        if policy in ("lab-nsec3", "lab-optout") and not query(
                port, zone, "NSEC3PARAM", timeout=0.5, address=address).answer:
            return False
    return True


def ds_records(port: int, address: str = "127.0.0.1") -> list[str]:
    """The DS records (SHA-256) of the anchored zones' key-signing keys, in zone-file syntax."""
    return [ds for zone in ANCHORED_ZONES for ds in _zone_ds_records(port, zone, address)]


def _zone_ds_records(port: int, zone: str, address: str) -> list[str]:
    reply = query(port, zone, "DNSKEY", tcp=True, address=address)
    origin = dns.name.from_text(zone)
    dnskeys = reply.find_rrset(
        reply.answer, origin, dns.rdataclass.IN, dns.rdatatype.DNSKEY
    )
    records = [
        f"{origin} 60 IN DS {dns.dnssec.make_ds(origin, key, 'SHA256')}"
        for key in dnskeys
        if key.flags & 0x0001  # SEP: the CSK / KSK the parent's DS points at
    ]
    if not records:
        raise LabError(f"BIND serves no key-signing DNSKEY for {zone}")
    return records
