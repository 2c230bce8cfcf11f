"""What the OE policy should say: groups of CIDRs, per-peer conns, the host's responder.

Built from config, the discovery cache and the enrollment record; checked before anything is
rendered. The never-locked-out rule: the ACME CA, the DNS servers and resolvers oeagent and
the host use, and configured exceptions always go into ``clear``, so a broken or hostile OE
peer can never cut oeagent off from what it needs to repair things.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from oeagent.discovery import claims
from oeagent.discovery.entries import Decision

# The group of enforce peers' addresses: dropped whenever the peer's own conn is absent
# (being replaced on a change or a renewal, or not loaded yet), so that traffic never falls
# to NULL OE or clear. Its conn matches any source, so its kernel policy is not the per-peer
# conn's (pluto routes both) and loses to it (policies/groups.conn.tmpl).
ENFORCED = "oeagent-enforced"
GROUPS = ("oeagent-clear", "oeagent-block", "oeagent-private-or-clear", ENFORCED)
# A %defaultroute conn has one address family, so each family has its own group conns
# (tried with pluto 4.10: IPv6 ranges in an IPv4 group conn make the kernel refuse the trap).
FAMILIES = {"ipv4": "", "ipv6": "-6"}
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class PeerConn:
    name: str
    fqdn: str
    address: str
    auth: str
    mode: str
    source: str
    until: str = ""


@dataclass(frozen=True)
class Responder:
    fqdn: str
    nickname: str
    auth: str


@dataclass
class Policy:
    groups: dict[str, list[str]]
    """Group (conn) name -> CIDRs; IPv6 groups carry the ``-6`` suffix."""
    peers: list[PeerConn] = field(default_factory=list)
    responder: Responder | None = None
    notes: list[str] = field(default_factory=list)
    """Things the operator should know (peers skipped, exceptions that could not be found)."""
    families: tuple[str, ...] = ("ipv4",)
    peer_updown: str = ""
    """pluto's ``leftupdown=`` command for the per-peer conns; "" for none."""


def host_network(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def canonical(cidrs: Iterable[str]) -> list[str]:
    """Sorted, deduplicated, strict CIDRs (IPv4 first); raises ValueError on junk."""
    nets = {ipaddress.ip_network(c, strict=True) for c in cidrs}
    return [str(n) for n in sorted(nets, key=lambda n: (n.version, n.network_address,
                                                         n.prefixlen))]


def group_conflicts(groups: Mapping[str, Sequence[str]]) -> list[str]:
    """A CIDR listed in two groups is ambiguous for pluto: refuse it, naming both. (The
    enforced group's conn matches any source, so its entries share no kernel policy with
    the others'.)"""
    seen: dict[str, str] = {}
    problems = []
    for group, cidrs in groups.items():
        family = 6 if group.endswith("-6") else 4
        problems += [f"{c} is in {group}, a group of the other address family"
                     for c in cidrs if ipaddress.ip_network(c, strict=False).version != family]
        if group.removesuffix("-6") == ENFORCED:
            continue
        for cidr in cidrs:
            key = str(ipaddress.ip_network(cidr, strict=False))
            if key in seen and seen[key] != group:
                problems.append(f"{key} is in both {seen[key]} and {group}")
            seen.setdefault(key, group)
    return problems


def conn_name(fqdn: str, index: int) -> str:
    return f"oeagent-peer-{fqdn.replace('.', '_')}-{index}"


def family_of(address_or_cidr: str) -> str:
    return "ipv6" if ipaddress.ip_network(address_or_cidr, strict=False).version == 6 else "ipv4"


def build(
    *, null_ranges: Sequence[str], clear: Sequence[str], block: Sequence[str],
    never_locked_out: Sequence[str], decisions: Sequence[Decision],
    static_peers: Sequence[tuple[str, str, str, str]], responder: Responder | None,
    ipv6: bool = False, peer_updown: str = "",
) -> Policy:
    """The desired policy. ``static_peers`` are (fqdn, address, auth, mode) from config;
    ``ipv6``: this host has an IPv6 default route, so IPv6 conns can be generated."""
    families = ("ipv4", "ipv6") if ipv6 else ("ipv4",)
    exempt = canonical([*clear, *(host_network(a) for a in never_locked_out)])
    blocked = canonical(block)
    policy = Policy(groups={}, families=families, peer_updown=peer_updown)
    for family in families:
        suffix = FAMILIES[family]
        mine = [c for c in exempt if family_of(c) == family]
        policy.groups[f"oeagent-clear{suffix}"] = mine
        policy.groups[f"oeagent-block{suffix}"] = [
            b for b in blocked if family_of(b) == family and b not in exempt]
        policy.groups[f"oeagent-private-or-clear{suffix}"] = [
            c for c in canonical(null_ranges) if family_of(c) == family]
    if not ipv6 and any(family_of(c) == "ipv6" for c in [*clear, *block, *null_ranges]):
        policy.notes.append("this host has no IPv6 default route: IPv6 ranges are left out")
    for b in blocked:
        if b in exempt:
            policy.notes.append(f"{b} is both blocked and a never-locked-out exception: clear")
    wanted: list[tuple[str, str, str, str, str, str]] = [
        (fqdn, address, auth, mode, "config", "") for fqdn, address, auth, mode in static_peers
    ]
    for d in decisions:
        ad = d.advertisement
        if not d.authenticated or ad is None or d.fqdn is None:
            continue
        until = f" until {d.held_until.isoformat()}" if d.held_until else ""
        wanted += [(d.fqdn, a, ad.auth, ad.mode, "discovery", until) for a in d.addresses]
    # One name per address: two conns for one address would make every packet to it fail
    # one of them (and drop). The losers are reported; the winner is left as it is.
    owners, conflicts = claims.resolve(peer_claims(decisions, static_peers))
    policy.notes += [f"conflict: {c.text()}" for c in conflicts]
    exempt_nets = [ipaddress.ip_network(c) for c in exempt]
    blocked_nets = [ipaddress.ip_network(b) for b in blocked if b not in exempt]
    counters: dict[str, int] = {}
    done: set[tuple[str, str]] = set()
    for fqdn, address, auth, mode, source, until in wanted:
        ip = ipaddress.ip_address(address)
        if (fqdn, str(ip)) in done or owners[str(ip)].name != fqdn:
            continue
        done.add((fqdn, str(ip)))
        if ip.version == 6 and not ipv6:
            policy.notes.append(f"{fqdn}: {address} is IPv6 and this host has no IPv6 "
                                "default route; skipped")
            continue
        if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
            policy.notes.append(f"{fqdn}: {address} cannot be an IPsec peer; skipped")
            continue
        if any(ip in net for net in exempt_nets):
            policy.notes.append(f"{fqdn}: {address} is a never-locked-out exception; stays clear")
            continue
        # The operator's block is final: an enforce peer's static conn would beat the block
        # shunt in pluto, and a testing peer's /32 group would tie with a /32 block.
        if any(ip in net for net in blocked_nets):
            policy.notes.append(f"{fqdn}: {address} is in policy.block; blocked, no conn")
            continue
        counters[fqdn] = counters.get(fqdn, 0) + 1
        policy.peers.append(PeerConn(conn_name(fqdn, counters[fqdn]), fqdn, str(ip), auth,
                                     mode, source, until))
    for family, suffix in FAMILIES.items():
        if family in families:  # testing peers may fall back: they must never lose traffic
            policy.groups[f"{ENFORCED}{suffix}"] = canonical(
                host_network(p.address) for p in policy.peers
                if p.mode == "enforce" and family_of(p.address) == family)
    policy.responder = responder
    return policy


def peer_claims(decisions: Sequence[Decision],
                static_peers: Sequence[tuple[str, str, str, str]] = ()) -> list[claims.Claim]:
    """Every (name, address) a per-peer conn could be built for, with its proof and age."""
    out = [claims.Claim(fqdn, address, "config", claims.BEFORE_RECORDS, mode)
           for fqdn, address, _, mode in static_peers]
    return out + [claim for d in decisions for claim in d.claims()]


def resolv_conf_servers(path: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The host's own resolvers: it must always reach them in clear."""
    servers = []
    try:
        # Undecodable bytes (a Latin-1 comment) must not hide the servers on other lines.
        lines = path.read_text("utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                servers.append(str(ipaddress.ip_address(parts[1].split("%")[0])))
            except ValueError:
                continue
    return servers
