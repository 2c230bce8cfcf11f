"""Policy groups with both address families, property-tested: IPv6 CIDRs (the documentation
prefix 2001:db8::/32 and the rest of the space: link-local, ULA, IPv4-mapped, ::/0) and mixed
lists. Each family has its own group conns (README "OE policy"), so an IPv6 range must never
land in an IPv4 group, nor the reverse, and every group file must hold exactly its CIDRs."""

from __future__ import annotations

import datetime as dt
import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from oeagent.policy import model, render

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def _network(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, prefix: int) -> str:
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _doc(low: int, prefix: int) -> str:
    return _network(ipaddress.IPv6Address((0x20010DB8 << 96) | low), prefix)


v4 = st.builds(_network, st.ip_addresses(v=4), st.integers(0, 32))
# Inside 2001:db8::/32, where real configurations' examples live, and the whole space.
v6 = st.one_of(
    st.builds(_doc, st.integers(0, 2**96 - 1), st.integers(32, 128)),
    st.builds(_network, st.sampled_from(["fe80::", "fd00::", "::ffff:192.0.2.1", "64:ff9b::",
                                         "::1", "::"]).map(ipaddress.IPv6Address),
              st.integers(0, 128)),
    st.builds(_network, st.ip_addresses(v=6), st.integers(0, 128)))
mixed = st.one_of(v4, v6)


def version(cidr: str) -> int:
    return ipaddress.ip_network(cidr).version


@given(st.lists(mixed, max_size=30))
def test_canonical_is_sorted_unique_stable_and_ipv4_first(cidrs: list[str]) -> None:
    once = model.canonical(cidrs)
    assert once == model.canonical(once) == model.canonical(reversed(cidrs))
    assert len(once) == len(set(cidrs))
    versions = [version(c) for c in once]
    assert versions == sorted(versions)  # IPv4 first, then IPv6
    assert all(str(ipaddress.ip_network(c)) == c for c in once)  # strict, compressed form


@given(st.lists(mixed, max_size=12), st.lists(mixed, max_size=12), st.lists(mixed, max_size=12))
def test_each_family_gets_its_own_groups_holding_exactly_its_cidrs(
    clear: list[str], block: list[str], null: list[str],
) -> None:
    policy = model.build(null_ranges=null, clear=clear, block=block, never_locked_out=[],
                         decisions=[], static_peers=[], responder=None, ipv6=True)
    assert set(policy.groups) == {f"{g}{s}" for g in model.GROUPS for s in ("", "-6")}
    for family, suffix in model.FAMILIES.items():
        wanted = 6 if family == "ipv6" else 4
        null_here = [c for c in model.canonical(null) if version(c) == wanted]
        assert policy.groups[f"oeagent-private-or-clear{suffix}"] == null_here
        assert policy.groups[f"oeagent-clear{suffix}"] == [
            c for c in model.canonical(clear) if version(c) == wanted]
        exempt = set(model.canonical(clear))
        assert policy.groups[f"oeagent-block{suffix}"] == [
            c for c in model.canonical(block) if version(c) == wanted and c not in exempt]
    assert not [p for p in model.group_conflicts(policy.groups) if "other address family" in p]
    files = render.render(policy, NOW)
    for group, cidrs in policy.groups.items():
        lines = [ln for ln in files[f"policies/{group}"].splitlines() if not ln.startswith("#")]
        assert lines == cidrs[::-1]  # highest first (oeagent/policy/render.py says why)
        assert all(version(c) == (6 if group.endswith("-6") else 4) for c in lines)
    conf = files["oeagent.conf"]
    for suffix, family in (("", "ipv4"), ("-6", "ipv6")):
        block_text = render.conn_blocks(conf)[f"oeagent-private-or-clear{suffix}"]
        assert f"hostaddrfamily={family}" in block_text
    # Conflicts are found per family exactly as for IPv4 alone.
    c, n = set(model.canonical(clear)), set(model.canonical(null))
    b = set(model.canonical(block))
    shared = (c & n) | ((b - c) & n)
    assert bool(model.group_conflicts(policy.groups)) == bool(shared)


@settings(max_examples=50)
@given(st.lists(mixed, max_size=12), st.lists(mixed, max_size=12))
def test_without_an_ipv6_route_ipv6_ranges_are_left_out_and_said_so(
    clear: list[str], null: list[str],
) -> None:
    policy = model.build(null_ranges=null, clear=clear, block=[], never_locked_out=[],
                         decisions=[], static_peers=[], responder=None, ipv6=False)
    assert not any(g.endswith("-6") for g in policy.groups)
    assert all(version(c) == 4 for cidrs in policy.groups.values() for c in cidrs)
    said = any("IPv6 ranges are left out" in n for n in policy.notes)
    assert said == any(version(c) == 6 for c in [*clear, *null])
    conf = render.render(policy, NOW)["oeagent.conf"]
    assert "hostaddrfamily=ipv6" not in conf


@settings(max_examples=50)
@given(st.lists(v4, min_size=1, max_size=6), st.lists(v6, min_size=1, max_size=6))
def test_a_range_in_the_other_familys_group_is_a_conflict(ipv4: list[str], ipv6: list[str]
                                                          ) -> None:
    groups = {"oeagent-clear": [*ipv4, ipv6[0]], "oeagent-clear-6": [*ipv6, ipv4[0]]}
    problems = model.group_conflicts(groups)
    assert f"{ipv6[0]} is in oeagent-clear, a group of the other address family" in problems
    assert f"{ipv4[0]} is in oeagent-clear-6, a group of the other address family" in problems
    assert all(model.family_of(c) == "ipv4" for c in ipv4)
    assert all(model.family_of(c) == "ipv6" for c in ipv6)  # IPv4-mapped included


addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)


@given(st.lists(addresses, min_size=1, max_size=8, unique=True), st.booleans())
def test_peer_conns_follow_the_family_of_their_address(peers: list[str], ipv6: bool) -> None:
    static = [(f"p{i}.example.org", a, "ecdsa", "enforce") for i, a in enumerate(peers)]
    policy = model.build(null_ranges=[], clear=[], block=[], never_locked_out=[], decisions=[],
                         static_peers=static, responder=None, ipv6=ipv6)
    usable = [a for a in peers if not (ip := ipaddress.ip_address(a)).is_loopback
              and not ip.is_unspecified and not ip.is_multicast and (ipv6 or ip.version == 4)]
    assert [p.address for p in policy.peers] == [str(ipaddress.ip_address(a)) for a in usable]
    blocks = render.conn_blocks(render.render(policy, NOW)["oeagent.conf"])
    for p in policy.peers:
        assert f"hostaddrfamily={model.family_of(p.address)}" in blocks[p.name], blocks[p.name]
