"""What a new lookup does to the advertisement a peer is held to: MTA-STS semantics, the
heart of no-downgrade.

A valid advertisement is held until it expires (HTTPS: max_age and the document's expiry;
DNS: the TTL, bounded by discovery.min_cache/max_cache). While an enforce or testing
advertisement is held, a lookup that finds nothing, something broken, a bogus answer or no
answer at all does NOT release the peer: an attacker who can block DNS or HTTPS must not be
able to downgrade it. Only a validly published ``mode=none`` or the expiry releases it, and
a lookup that found an advertisement replaces the held one only as ``_held_back`` allows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from collections.abc import Mapping

from oeagent.discovery.entries import Decision, Entry
from oeagent.discovery.lookup import Result


def merge(old: Entry | None, result: Result, now: dt.datetime,
          claims_after: dt.datetime | None = None) -> Entry:
    """The new entry for a peer after ``result``; the heart of no-downgrade.

    ``claims_after``: the newest claim date already recorded (``PeerCache``); a claim first
    made now is dated after it even when the clock says otherwise."""
    reasons = tuple(result.reasons)
    failed, why = _held_back(old, result, now)
    reasons += (why,) if why else ()
    if (result.status == "authenticated" or result.released) and not failed:
        decision = Decision(result.peer, result.fqdn, result.advertisement, result.expires,
                            result.addresses, result.source,
                            _since(old, result, now, claims_after))
        if old is not None:
            decision = _no_earlier(decision, old.effective(now))
        return Entry(decision, result.status, now, reasons, held=False, obtained_at=now)
    if old is not None:
        kept = old.effective(now)
        if kept.authenticated:
            note = f"kept the {kept.advertisement.mode} advertisement until "  # type: ignore[union-attr]
            note += f"{kept.held_until.isoformat() if kept.held_until else '?'}"
            return Entry(kept, failed or result.status, now, (*reasons, note), held=True,
                         obtained_at=old.obtained_at or old.checked_at)
    decision = Decision(result.peer, result.fqdn, None, None, result.addresses)
    return Entry(decision, result.status, now, reasons, held=False)


def _no_earlier(decision: Decision, kept: Decision) -> Decision:
    """``decision`` found again exactly what ``kept`` holds: it keeps the later expiry.

    The earlier answer promised the held one. A new expiry before it comes from a clock set
    back (dated by that clock, it would expire as soon as the clock is right again, on every
    lookup made while it was behind) or a peer that shortened its TTL or max_age without
    changing anything else (it withdraws with ``mode=none``). A different advertisement
    starts its own lifetime."""
    until, held = decision.held_until, kept.held_until
    if (kept.authenticated and kept.key() == decision.key() and until is not None
            and held is not None and held > until):
        return dataclasses.replace(decision, held_until=held)
    return decision


def _held_back(old: Entry | None, result: Result, now: dt.datetime) -> tuple[str, str]:
    """What keeps ``result``, though it found an advertisement, from replacing the one
    ``old`` holds: (the status to record, a reason to add); ("", "") when it may.

    A lookup whose A or AAAA query failed has only some of the name's addresses: replacing
    the held decision with it would take the conn (and the drop) off the others, which is a
    downgrade that whoever can block one query could cause at will. A release (``mode=none``)
    does not depend on the addresses, so it still counts.

    A held DNSSEC-signed advertisement is not replaced (nor released) by an HTTPS document
    found because the DNS lookup failed: the failed answer may still hold it, and a document
    rests on a weaker proof (a certificate for the name; ``oeagent.discovery.claims`` ranks
    it below DNSSEC), so blocking DNS would let whoever can serve one change or release the
    peer. After a validated answer that the name no longer advertises in DNS, the document
    counts.

    A held address that the document still covers (it lists the address, or lists none) and
    that only an unsigned A/AAAA answer left out is no validated change: whoever is on the
    DNS path can forge that answer (pointing the name at a relay to the real server, which
    still delivers the genuine document), and the peer would lose its conn there. The held
    decision stays until it expires; a signed answer, or the document, drops an address at
    once."""
    if old is None:
        return "", ""
    kept = old.effective(now)
    if not kept.authenticated:
        return "", ""
    if result.status == "authenticated" and result.incomplete:
        return result.incomplete, ""
    # An unknown proof (a cache written before it was recorded) may be DNSSEC: held alike.
    if kept.source != "https" and result.source == "https" and result.dns_failure:
        return result.dns_failure, ""
    ad = result.advertisement
    if (result.status == "authenticated" and result.unsigned_families and ad is not None
            and kept.fqdn == result.fqdn):
        gone = [a for a in kept.addresses
                if a not in result.addresses and (not ad.addresses or a in ad.addresses)
                and ipaddress.ip_address(a).version in result.unsigned_families]
        if gone:
            verb = "is" if len(gone) == 1 else "are"
            return result.status, (
                f"{', '.join(gone)} {verb} no longer in {result.fqdn}'s unsigned A/AAAA "
                "records, but the advertisement still covers it: not a validated change")
    return "", ""


def _since(old: Entry | None, result: Result, now: dt.datetime,
           claims_after: dt.datetime | None = None) -> dict[str, dt.datetime]:
    """A claim keeps its first date while the peer keeps claiming the address under the same
    name; a new address, or one claimed again after a release or expiry, starts now -- or,
    when the clock was set back behind ``claims_after`` (the newest claim recorded before),
    just after that: the older claim keeps an address (``oeagent.discovery.claims``), so a
    clock set back must not make a claim made today older than one recorded yesterday."""
    if result.released:
        return {}
    first = now
    if claims_after is not None and now <= claims_after:
        first = claims_after + dt.timedelta(microseconds=1)
    before: Mapping[str, dt.datetime] = {}
    if old is not None:
        kept = old.effective(now)
        if kept.authenticated and kept.fqdn == result.fqdn:
            before = kept.since
    return {a: before.get(a, first) for a in result.addresses}
