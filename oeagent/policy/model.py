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

from oeagent.discovery.cache import Decision

GROUPS = ("oeagent-clear", "oeagent-block", "oeagent-private-or-clear")
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
    peers: list[PeerConn] = field(default_factory=list)
    responder: Responder | None = None
    notes: list[str] = field(default_factory=list)
    """Things the operator should know (peers skipped, exceptions that could not be found)."""


def host_network(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def canonical(cidrs: Iterable[str]) -> list[str]:
    """Sorted, deduplicated, strict CIDRs (IPv4 first); raises ValueError on junk."""
    nets = {ipaddress.ip_network(c, strict=True) for c in cidrs}
    return [str(n) for n in sorted(nets, key=lambda n: (n.version, n.network_address,
                                                         n.prefixlen))]


def group_conflicts(groups: Mapping[str, Sequence[str]]) -> list[str]:
    """A CIDR listed in two groups is ambiguous for pluto: refuse it, naming both."""
    seen: dict[str, str] = {}
    problems = []
    for group, cidrs in groups.items():
        problems += [f"{c} in {group}: IPv6 groups are not generated yet (pluto 4.10 refuses "
                     "IPv6 ranges in the IPv4 %defaultroute group conns)"
                     for c in cidrs if ipaddress.ip_network(c, strict=False).version == 6]
        for cidr in cidrs:
            key = str(ipaddress.ip_network(cidr, strict=False))
            if key in seen and seen[key] != group:
                problems.append(f"{key} is in both {seen[key]} and {group}")
            seen.setdefault(key, group)
    return problems


def conn_name(fqdn: str, index: int) -> str:
    return f"oeagent-peer-{fqdn.replace('.', '_')}-{index}"


def build(
    *, null_ranges: Sequence[str], clear: Sequence[str], block: Sequence[str],
    never_locked_out: Sequence[str], decisions: Sequence[Decision],
    static_peers: Sequence[tuple[str, str, str, str]], responder: Responder | None,
) -> Policy:
    """The desired policy. ``static_peers`` are (fqdn, address, auth, mode) from config."""
    v4_only = [a for a in never_locked_out if ipaddress.ip_address(a).version == 4]
    exempt = canonical([*clear, *(host_network(a) for a in v4_only)])
    blocked = canonical(block)
    policy = Policy(groups={
        "oeagent-clear": exempt,
        "oeagent-block": [b for b in blocked if b not in exempt],
        "oeagent-private-or-clear": canonical(null_ranges),
    })
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
    exempt_nets = [ipaddress.ip_network(c) for c in exempt]
    counters: dict[str, int] = {}
    done: set[tuple[str, str]] = set()
    for fqdn, address, auth, mode, source, until in wanted:
        if (fqdn, address) in done:
            continue
        done.add((fqdn, address))
        ip = ipaddress.ip_address(address)
        if ip.version == 6:
            # pluto 4.10 puts IPv6 selectors into the IPv4 %defaultroute conns and the
            # kernel refuses them (tried in namespaces): IPv6 OE is not generated yet.
            policy.notes.append(f"{fqdn}: {address} is IPv6; per-peer IPv6 conns are not "
                                "generated yet")
            continue
        if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
            policy.notes.append(f"{fqdn}: {address} cannot be an IPsec peer; skipped")
            continue
        if any(ip in net for net in exempt_nets):
            policy.notes.append(f"{fqdn}: {address} is a never-locked-out exception; stays clear")
            continue
        counters[fqdn] = counters.get(fqdn, 0) + 1
        policy.peers.append(PeerConn(conn_name(fqdn, counters[fqdn]), fqdn, str(ip), auth,
                                     mode, source, until))
    policy.responder = responder
    return policy


def resolv_conf_servers(path: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The host's own resolvers: it must always reach them in clear."""
    servers = []
    try:
        lines = path.read_text().splitlines()
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
