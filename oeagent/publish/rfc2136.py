"""The ``rfc2136`` backend: TLSA, IPSECKEY and ``_oe`` TXT by dynamic update with TSIG.

Only oeagent's own values are changed, value by value: a ``v=OE1`` TXT at ``_oe``, a
``3 1 1`` TLSA at the IKE port names, and the IPSECKEY values oeagent published before
(remembered in the state directory) or publishes now. Everything else at those names (an A
record, a foreign TXT, someone's raw-key IPSECKEY) is never deleted nor rewritten; where
foreign values share an rrset, ours take that rrset's TTL so not even their TTL changes.

Each update carries, for every rrset it changes, the exact rrset we read as a prerequisite
(or "no such rrset"): a compare-and-swap. If someone changed it in between the server answers
NXRRSET/YXRRSET, nothing is applied, and we re-read and plan again. One message per zone is
atomic; when a host's names span zones (reverse names), a later zone's fatal refusal undoes
the earlier zones so nothing stays half-published.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.rdatatype
import dns.rrset

from oeagent import dnsupdate, fsio, resolver
from oeagent.errors import DnsUpdateError
from oeagent.publish import records
from oeagent.publish.base import Backend, Check, Desired, Diff, Plan, StalePlan, Verification
from oeagent.publish.records import RRsetKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _RRsetChange:
    key: RRsetKey
    read: dns.rrset.RRset
    """The whole rrset as the server answered it: the compare-and-swap prerequisite."""
    delete: tuple[dns.rdata.Rdata, ...]
    add: tuple[dns.rdata.Rdata, ...]
    ttl: int


def _where(key: RRsetKey) -> str:
    return f"{key[0].to_text(omit_final_dot=True)} {dns.rdatatype.to_text(key[1])}"


class Rfc2136Backend(Backend):
    name = "rfc2136"
    carries_dns = True

    def __init__(self, server: dnsupdate.Server, zone: str | None, ttl: int,
                 managed: Iterable[RRsetKey], reverse: bool, check_with: resolver.Resolver,
                 memory: Path) -> None:
        self.server = server
        self.zone = dns.name.from_text(zone) if zone else None
        self.ttl = ttl
        self.managed = list(managed)
        self.reverse = reverse
        self.resolver = check_with
        self.memory = memory
        self._zones: dict[dns.name.Name, dns.name.Name] = {}

    # -- what we published before ----------------------------------------------------------
    def _remembered(self) -> dict[RRsetKey, set[str]]:
        try:
            raw = json.loads(self.memory.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.memory, exc)
            return {}
        entries = raw.get("rrsets") if isinstance(raw, dict) else None
        if not isinstance(entries, list):
            log.warning("ignoring %s: it holds no list of rrsets", self.memory)
            return {}
        out: dict[RRsetKey, set[str]] = {}
        for entry in entries:
            try:
                values = entry["values"]
                if not isinstance(values, list):
                    raise ValueError("values is not a list")
                key = (dns.name.from_text(entry["name"]), dns.rdatatype.from_text(entry["type"]))
            except (KeyError, TypeError, ValueError, AttributeError,
                    dns.exception.DNSException) as exc:
                log.warning("passing over a damaged entry of %s (%s): %r", self.memory, exc,
                            entry)
                continue
            out[key] = {str(v) for v in values}
        return out

    def _remember(self, published: dict[RRsetKey, dns.rrset.RRset]) -> None:
        rrsets = [{"name": k[0].to_text(), "type": dns.rdatatype.to_text(k[1]),
                   "values": sorted(r.to_text() for r in v)} for k, v in published.items()]
        fsio.ensure_private_dir(self.memory.parent)
        fsio.atomic_write_text(self.memory, json.dumps({"rrsets": rrsets}, indent=2) + "\n")

    def _wanted(self, desired: Desired | None) -> dict[RRsetKey, dns.rrset.RRset]:
        if desired is None:
            return {}
        return records.dns_rrsets(desired.advert, desired.public_keys, self.ttl, self.reverse)

    # -- the contract ----------------------------------------------------------------------
    def plan(self, desired: Desired | None) -> Plan:
        wanted = self._wanted(desired)
        remembered = self._remembered()
        keys = list(dict.fromkeys([*self.managed, *wanted, *remembered]))
        changes: list[_RRsetChange] = []
        diffs: list[Diff] = []
        for key in keys:
            current = dnsupdate.current_rrset(self.server, *key)
            have = {r.to_text(): r for r in current}
            want = {r.to_text(): r for r in wanted.get(key, ())}
            ours = {text for text, rdata in have.items()
                    if text in want or text in remembered.get(key, set())
                    or records.is_convention_value(key[1], rdata)}
            delete = sorted(ours - set(want))
            add = sorted(set(want) - set(have))
            if not delete and not add:
                continue
            foreign = set(have) - ours
            ttl = current.ttl if foreign else self.ttl
            changes.append(_RRsetChange(key, current, tuple(have[t] for t in delete),
                                        tuple(want[t] for t in add), ttl))
            diffs += [Diff("-", _where(key), t) for t in delete]
            diffs += [Diff("+", _where(key), t) for t in add]
        return Plan(self.name, desired, diffs, detail=(changes, wanted))

    def _zone_of(self, owner: dns.name.Name) -> dns.name.Name:
        if self.zone is not None and owner.is_subdomain(self.zone):
            return self.zone
        if owner not in self._zones:
            self._zones[owner] = dnsupdate.find_zone(self.server, owner)
        return self._zones[owner]

    def _apply(self, plan: Plan) -> None:
        changes, wanted = plan.detail
        by_zone: dict[dns.name.Name, list[_RRsetChange]] = {}
        for change in changes:
            by_zone.setdefault(self._zone_of(change.key[0]), []).append(change)
        done: list[tuple[dns.name.Name, list[dnsupdate.Change]]] = []
        for zone, zone_changes in by_zone.items():
            prerequisites = [
                dnsupdate.Prerequisite("present", c.key[0], c.key[1], c.read) if len(c.read)
                else dnsupdate.Prerequisite("absent", c.key[0], c.key[1])
                for c in zone_changes
            ]
            updates = [dnsupdate.Change("delete", dns.rrset.from_rdata_list(c.key[0], 0, c.delete))
                       for c in zone_changes if c.delete]
            updates += [dnsupdate.Change("add", dns.rrset.from_rdata_list(c.key[0], c.ttl, c.add))
                        for c in zone_changes if c.add]
            try:
                dnsupdate.apply(self.server, zone, updates, prerequisites)
            except dnsupdate.PrerequisiteFailed as exc:
                self._undo(done)
                raise StalePlan(str(exc)) from None
            except DnsUpdateError:
                self._undo(done)
                raise
            done.append((zone, updates))
        self._remember(wanted)
        # An inline-signing primary acknowledges an update a few ms before it serves it;
        # wait for the authoritative answer so a re-plan (or a verify) sees the new state.
        for change in changes:
            owner, rdtype = change.key
            if change.add:
                dnsupdate.wait_for(self.server, owner, rdtype, {r.to_text() for r in change.add},
                                   present=True, timeout=self.server.timeout)
            if change.delete:
                dnsupdate.wait_for(self.server, owner, rdtype,
                                   {r.to_text() for r in change.delete}, present=False,
                                   timeout=self.server.timeout)

    def _undo(self, done: list[tuple[dns.name.Name, list[dnsupdate.Change]]]) -> None:
        for zone, updates in reversed(done):
            inverse = [dnsupdate.Change("add" if u.action == "delete" else "delete", u.rrset)
                       for u in reversed(updates)]
            with contextlib.suppress(DnsUpdateError):
                dnsupdate.apply(self.server, zone, inverse)

    def verify(self, desired: Desired | None, timeout: float) -> Verification:
        """Every rrset through the validating resolver: ours exactly as wanted, with AD."""
        wanted = self._wanted(desired)
        keys = list(dict.fromkeys([*self.managed, *wanted]))
        answers: dict[RRsetKey, resolver.Answer] = {}

        def good(key: RRsetKey) -> bool:
            answer = answers[key]
            want = {r.to_text() for r in wanted.get(key, ())}
            stale = {v for v in answer.values - want if _is_convention_text(key[1], v)}
            return answer.secure and want <= answer.values and not stale

        deadline = time.monotonic() + timeout

        def check() -> bool:
            for key in keys:
                # Each query gets at most what is left of the bound (a silent resolver must
                # not stretch verify_timeout to one resolver timeout per rrset).
                left = max(0.2, min(self.resolver.timeout, deadline - time.monotonic()))
                answers[key] = resolver.query(dataclasses.replace(self.resolver, timeout=left),
                                              *key)
            return all(good(k) for k in keys)

        waited = resolver.poll(check, timeout)
        result = Verification(self.name)
        for key in keys:
            answer = answers[key]
            state = "published" if key in wanted else "absent"
            timing = f" after {waited:.1f} s" if waited >= 0 else f" (gave up after {timeout:g} s)"
            result.checks.append(Check(f"{_where(key)} {state}", good(key),
                                       f"resolver {self.resolver.address}#{self.resolver.port}: "
                                       f"{answer.describe()}{timing}"))
        return result


def _is_convention_text(rdtype: dns.rdatatype.RdataType, text: str) -> bool:
    if rdtype == records.TXT:
        return text.startswith('"v=OE1;')
    if rdtype == records.TLSA:
        return text.startswith("3 1 1 ")
    return False
