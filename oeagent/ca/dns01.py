"""dns-01 (RFC 8555 §8.4): publish ``_acme-challenge.<name>`` TXT records by RFC 2136.

The records are added, then we wait until the zone's primary ANSWERS them before the CA is
told to look: an inline-signing BIND acknowledges an update a few milliseconds before it
serves the re-signed answer, and a CA that looks in that gap fails the order. Afterwards,
also on failure, exactly the values we added are deleted: other TXT records at the same name
(another client's challenge, a second host validating the same name) are left alone.

What we add is written to ``STATE/dns01-pending.json`` BEFORE the update is sent and removed
once the records are deleted again. A run that could not delete them (the server crashed
after accepting the update, the run was killed) leaves that file, and the next enroll or
renew deletes exactly those values first: a crash never leaves challenge records for good.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

from oeagent import dnsupdate
from oeagent.config import DnsChallengeConfig
from oeagent.errors import DnsUpdateError
from oeagent.report import Reporter
from oeagent.state import StateDir

log = logging.getLogger(__name__)


def server_for(config: DnsChallengeConfig) -> dnsupdate.Server:
    if config.tsig_secret is None:
        raise DnsUpdateError("dns-01 needs challenge.dns.tsig_secret_file (updates are signed)")
    key = dnsupdate.TsigKey(config.tsig_key_name, config.tsig_algorithm, config.tsig_secret)
    return dnsupdate.Server(config.server, config.port, key,
                            timeout=min(10.0, config.propagation_timeout))


def txt_rrset(name: dns.name.Name, ttl: int, values: set[str]) -> dns.rrset.RRset:
    rdatas = [dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [v.encode("ascii")])
              for v in sorted(values)]
    return dns.rrset.from_rdata_list(name, ttl, rdatas)


def _zone_for(config: DnsChallengeConfig, server: dnsupdate.Server,
              name: dns.name.Name) -> dns.name.Name:
    if config.zone:
        zone = dns.name.from_text(config.zone)
        if not name.is_subdomain(zone):
            raise DnsUpdateError(f"{name.to_text(omit_final_dot=True)} is not in "
                                 f"challenge.dns.zone {config.zone}")
        return zone
    return dnsupdate.find_zone(server, name)


def pending_path(state: StateDir) -> Path:
    return state.root / "dns01-pending.json"


Added = list[tuple[dns.name.Name, list[dns.rrset.RRset]]]


def _remember(state: StateDir | None, added: Added) -> None:
    if state is None:
        return
    state.write_json(pending_path(state), {"zones": [
        {"zone": _text(zone),
         "records": {_text(r.name): sorted(rd.to_text() for rd in r) for r in rrsets}}
        for zone, rrsets in added]})


def _recall(document: dict[str, object]) -> Added:
    """What ``_remember`` wrote. A damaged entry is passed over with a warning: failing every
    enrollment over a leftover challenge record would cost more than the record."""
    added: Added = []
    zones = document.get("zones")
    for entry in zones if isinstance(zones, list) else []:
        try:
            if not isinstance(entry, dict) or not isinstance(entry.get("records"), dict):
                raise ValueError("not a zone with records")
            zone = dns.name.from_text(str(entry["zone"]))
            rrsets = [dns.rrset.from_text_list(dns.name.from_text(owner), 0, "IN", "TXT",
                                               [str(v) for v in values])
                      for owner, values in entry["records"].items()
                      if isinstance(values, list)]
        except (KeyError, ValueError, dns.exception.DNSException) as exc:
            log.warning("passing over a damaged entry of dns01-pending.json (%s): %r",
                        exc, entry)
            continue
        added.append((zone, rrsets))
    return added


def remove_leftovers(config: DnsChallengeConfig, state: StateDir, reporter: Reporter) -> None:
    """Delete the TXT records an earlier run added and could not delete (call with the
    lock held). If the server still cannot take the delete, say so and keep the record."""
    document = state.read_json(pending_path(state))
    if document is None:
        return
    if _remove(server_for(config), _recall(document), reporter, what="left by an interrupted "
               "run"):
        with contextlib.suppress(FileNotFoundError):
            pending_path(state).unlink()


@contextlib.contextmanager
def published(config: DnsChallengeConfig, records: Mapping[str, set[str]],
              reporter: Reporter, state: StateDir | None = None) -> Iterator[None]:
    """Publish ``records`` (owner name -> TXT values) for the duration of the block;
    with ``state``, what is added is remembered there until it is deleted again."""
    # Leftovers enroll and renew could not delete stay remembered with ours, never dropped.
    document = state.read_json(pending_path(state)) if state is not None else None
    earlier = _recall(document) if document else []
    server = server_for(config)
    by_zone: dict[dns.name.Name, list[dns.rrset.RRset]] = {}
    for owner, values in records.items():
        name = dns.name.from_text(owner)
        by_zone.setdefault(_zone_for(config, server, name), []).append(
            txt_rrset(name, config.ttl, values))

    added: Added = []
    try:
        for zone, rrsets in by_zone.items():
            # Remembered before sending: the server may apply the update and die unanswered.
            _remember(state, [*earlier, *added, (zone, rrsets)])
            dnsupdate.apply(server, zone, [dnsupdate.Change("add", r) for r in rrsets])
            added.append((zone, rrsets))
            for rrset in rrsets:
                reporter.step("challenge", f"published TXT {_text(rrset.name)} in zone "
                              f"{_text(zone)} at {server}", owner=_text(rrset.name),
                              zone=_text(zone))
        for _, rrsets in added:
            for rrset in rrsets:
                waited = dnsupdate.wait_for(server, rrset.name, dns.rdatatype.TXT,
                                            {r.to_text() for r in rrset}, present=True,
                                            timeout=config.propagation_timeout)
                reporter.step("challenge", f"{server} answers TXT {_text(rrset.name)} "
                              f"({waited * 1000:.0f} ms after the update)",
                              owner=_text(rrset.name), waited_ms=round(waited * 1000))
        yield
    finally:
        # With a record, every zone an update was sent to, answered or not: it may have
        # been applied (deleting values that are not there changes nothing).
        document = state.read_json(pending_path(state)) if state is not None else None
        sent = _recall(document) if document else [*earlier, *added]
        if _remove(server, sent, reporter) and state is not None:
            with contextlib.suppress(FileNotFoundError):
                pending_path(state).unlink()


def _remove(server: dnsupdate.Server, added: Added, reporter: Reporter,
            what: str = "") -> bool:
    """Delete exactly ``added``; True if every zone's delete was accepted."""
    removed = True
    for zone, rrsets in added:
        try:
            dnsupdate.apply(server, zone, [dnsupdate.Change("delete", r) for r in rrsets])
        except DnsUpdateError as exc:
            # Never mask the error that got us here; a stale TXT is harmless, so say it and go
            # on: the pending record lets the next run delete it.
            log.warning("could not remove the dns-01 TXT records: %s", exc)
            reporter.step("cleanup", f"could not remove TXT records in {_text(zone)}"
                          f"{' ' + what if what else ''}: {exc}",
                          ok=False, names=[_text(r.name) for r in rrsets])
            removed = False
        else:
            reporter.step("cleanup", f"removed the dns-01 TXT records in {_text(zone)}"
                          f"{' ' + what if what else ''}",
                          names=[_text(r.name) for r in rrsets])
    return removed


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)
