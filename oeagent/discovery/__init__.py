"""``oeagent discover``: look peers up (concurrently), hold them to what they advertised.

``discover`` is the action behind the command; ``refresh_due_peers`` is what the long-running
agent calls on its schedule: it refreshes cached peers before their advertisements expire and
says whether any decision differs from the one the installed policy holds, so the caller
re-applies the policy only when needed; ``next_refresh`` says when to call it again.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from oeagent import names
from oeagent.config import Config
from oeagent.discovery import claims
from oeagent.discovery.cache import PeerCache
from oeagent.discovery.entries import MIN_INTERVAL, Decision, Entry, InstalledKey, Timing
from oeagent.discovery.holding import merge
from oeagent.discovery.lookup import Discoverer, Result
from oeagent.errors import OeagentError
from oeagent.state import StateDir

__all__ = ["Decision", "PeerCache", "discover", "installed_keys", "installed_policy",
           "next_refresh", "read_peer_file", "record_installed", "refresh_due_peers", "timing"]

MAX_PEERS_FILE = 100_000
MAX_PEERS_FILE_BYTES = 64 * 2**20
"""Room for MAX_PEERS_FILE names of the longest kind (253 characters), with comments."""
_ROW_JSON = json.JSONEncoder(sort_keys=True)
"""``json.dumps(row, sort_keys=True)`` without building an encoder for every row."""


def read_peer_file(path: Path) -> list[str]:
    """Names or IPs, one a line; ``#`` comments and blank lines ignored, duplicates dropped.

    Bounded: at most MAX_PEERS_FILE_BYTES are read (``/dev/zero`` or a FIFO would otherwise
    be read until memory runs out), and reading stops at the first peer over MAX_PEERS_FILE.
    """
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_PEERS_FILE_BYTES + 1)
        lines = raw.decode("utf-8").splitlines()
    except OSError as exc:
        raise OeagentError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        number = raw.count(b"\n", 0, exc.start) + 1
        raise OeagentError(f"{path} is not UTF-8 (line {number})") from None
    if len(raw) > MAX_PEERS_FILE_BYTES:
        raise OeagentError(f"{path} is larger than {MAX_PEERS_FILE_BYTES // 2**20} MiB")
    peers: dict[str, None] = {}  # a dict keeps the order; a list scan per line was quadratic
    for line in lines:
        item = line.split("#", 1)[0].strip()
        if item:
            peers[item] = None
            if len(peers) > MAX_PEERS_FILE:
                raise OeagentError(f"{path} lists more than {MAX_PEERS_FILE} peers")
    return list(peers)


def lookup_all(
    discoverer: Discoverer, peers: list[str], now: dt.datetime, concurrency: int,
    on_result: Callable[[Result, int, int], None] | None = None,
) -> list[Result]:
    """Look every peer up with at most ``concurrency`` in flight; results in input order.

    ``on_result`` is called in this thread as each lookup finishes. Plain worker threads
    taking the next peer from a shared iterator and handing results back through one queue:
    a thread pool's future, waiter and condition per peer were ~8 % of discovery's
    interpreter time. A lookup that raises stops the others taking new peers; the
    exception is raised here once the running lookups finished.
    """
    if not peers:
        return []
    todo = iter(enumerate(peers))
    take = threading.Lock()
    stop = threading.Event()
    done_queue: queue.SimpleQueue[tuple[int, Result | None, BaseException | None]] = \
        queue.SimpleQueue()

    def work() -> None:
        while not stop.is_set():
            with take:
                item = next(todo, None)
            if item is None:
                return
            index, peer = item
            try:
                done_queue.put((index, discoverer.lookup(peer, now), None))
            except BaseException as exc:  # noqa: BLE001  # raised in the caller's thread
                done_queue.put((index, None, exc))
                return

    workers = [threading.Thread(target=work, name=f"oeagent-lookup-{n}", daemon=True)
               for n in range(max(1, min(concurrency, len(peers))))]
    for worker in workers:
        worker.start()
    results: list[Result | None] = [None] * len(peers)
    try:
        for done in range(1, len(peers) + 1):
            index, result, error = done_queue.get()
            if error is not None:
                raise error
            assert result is not None
            results[index] = result
            if on_result is not None:
                on_result(result, done, len(peers))
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    return [r for r in results if r is not None]


def discover(
    cfg: Config, peers: Iterable[str], *, as_json_lines: bool = False,
    out: TextIO | None = None, now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Look ``peers`` up, update the cache, and report each peer's decision.

    Rows are printed as lookups finish (a long list shows results at once), judged against
    a snapshot of the cache; the cache itself is updated under the state lock at the end,
    so the lock is never held while waiting for the network.
    """
    now = now or dt.datetime.now(dt.UTC)
    out = out or sys.stdout
    peer_list = list(dict.fromkeys(peers))
    progress = sys.stderr.isatty() and len(peer_list) > 1
    state = StateDir(cfg.state_dir)
    snapshot = PeerCache(state)

    def on_result(result: Result, done: int, total: int) -> None:
        entry = merge(snapshot.entries.get(result.peer), result, now)
        r = row(result, entry, now)
        if progress:
            sys.stderr.write("\r\033[K")
        out.write((_ROW_JSON.encode(r) if as_json_lines else _text(r)) + "\n")
        out.flush()
        if progress:
            sys.stderr.write(f"{done}/{total} looked up")
            sys.stderr.flush()

    results = lookup_all(Discoverer(cfg.discovery), peer_list, now, cfg.discovery.concurrency,
                         on_result)
    if progress:
        sys.stderr.write("\n")
    changed = False
    with state.lock(cfg.lock_timeout):
        cache = PeerCache(state)
        for result in results:
            changed |= cache.update(result, now)[1]
        cache.save()
        conflicts = contested(cache, {r.fqdn for r in results if r.fqdn}, now)
    for conflict in conflicts:
        out.write((json.dumps({"conflict": conflict.as_dict(), "text": conflict.text()},
                              sort_keys=True) if as_json_lines
                   else f"conflict: {conflict.text()}") + "\n")
    return {"peers": len(results), "changed": changed,
            "conflicts": [c.text() for c in conflicts]}


def contested(cache: PeerCache, names: set[str], now: dt.datetime) -> list[claims.Conflict]:
    """Addresses that ``names`` claim together with another authenticated peer: only one
    name gets a conn for each (``oeagent.discovery.claims``, as the policy decides)."""
    found = [claim for d in cache.decisions(now) for claim in d.claims()]
    return [c for c in claims.resolve(found)[1]
            if names & {c.kept.name, *(x.name for x in c.lost)}]


def row(result: Result, entry: Entry, now: dt.datetime) -> dict[str, Any]:
    decision = entry.effective(now)
    ad = decision.advertisement
    return {
        **result.as_dict(),
        "decision": ("authenticated-" + ad.mode) if ad and decision.authenticated else "null-oe",
        "held": entry.held,
        "held_until": decision.held_until.isoformat() if decision.held_until else None,
    }


def _text(r: dict[str, Any]) -> str:
    why = f" ({'; '.join(r['reasons'])})" if r["reasons"] and r["status"] != "authenticated" else ""
    via = f" via {r['source']}" if r["source"] else ""
    held = f", held until {r['held_until']}" if r["held"] else ""
    notes = "".join(f"\n  note: {n}" for n in r.get("notes", ()))
    # A refused peer is shown as typed; quoted (and cut short when long) when it is not
    # printable, so an escape sequence in a --from-file line cannot reach the terminal.
    plain = r["peer"].isprintable() and len(r["peer"]) <= names.SHOWN_CHARACTERS
    peer = r["peer"] if plain else names.shown(r["peer"])
    return f"{peer}: {r['status']}{via} -> {r['decision']}{held}{why}{notes}"


def timing(cfg: Config) -> Timing:
    """The refresh schedule for this configuration: failed lookups retried after min_cache,
    peers that publish nothing after max_cache; a held advertisement refreshed no later than
    four DNS timeouts (a whole lookup's worth of queries) and one agent interval before it
    expires, so a retry fits."""
    d = cfg.discovery
    return Timing(retry_failed=dt.timedelta(seconds=d.min_cache),
                  retry_none=dt.timedelta(seconds=d.max_cache),
                  min_margin=max(dt.timedelta(seconds=4 * d.dns_timeout), MIN_INTERVAL))


def refresh_due_peers(cfg: Config, now: dt.datetime | None = None) -> bool:
    """Refresh the cached peers that are due; True when any peer's decision at ``now`` differs
    from the one the installed policy was rendered from (``record_installed``) -- after a
    lookup, or because a held advertisement expired with no lookup able to renew it.

    For ``oeagent run``: call it at ``next_refresh``; when it returns True, re-apply the policy
    and record what it was rendered from (``oeagent.policy.refresh`` does all of it). Takes
    the state lock while it reads and updates the cache; lookups happen outside it.
    """
    now = now or dt.datetime.now(dt.UTC)
    state = StateDir(cfg.state_dir)
    with state.lock(cfg.lock_timeout):
        cache = PeerCache(state)
        due = cache.due(now, timing(cfg))
        if not due:  # most runs: an expiry, or nothing; no second read of peers.json
            return bool(cache.changed(now))
    results = lookup_all(Discoverer(cfg.discovery), due, now, cfg.discovery.concurrency)
    with state.lock(cfg.lock_timeout):
        cache = PeerCache(state)
        for result in results:
            cache.update(result, now)
        cache.save()
        return bool(cache.changed(now))


def next_refresh(cfg: Config, now: dt.datetime | None = None) -> dt.datetime | None:
    """When ``refresh_due_peers`` next has something to do (a lookup falls due or a held
    advertisement expires); None without cached peers. May lie in the past."""
    now = now or dt.datetime.now(dt.UTC)
    state = StateDir(cfg.state_dir)
    with state.lock(cfg.lock_timeout):
        return PeerCache(state).next_due(now, timing(cfg))


def installed_keys(cfg: Config, now: dt.datetime) -> dict[str, InstalledKey]:
    """What a policy rendered at ``now`` holds each peer to; take it before rendering."""
    state = StateDir(cfg.state_dir)
    with state.lock(cfg.lock_timeout):
        return PeerCache(state).effective_keys(now)


def record_installed(cfg: Config, keys: dict[str, InstalledKey], policy: str | None) -> None:
    """Remember that the installed policy (``policy``: a digest of its file) was rendered from
    ``keys`` (``installed_keys``)."""
    state = StateDir(cfg.state_dir)
    with state.lock(cfg.lock_timeout):
        cache = PeerCache(state)
        cache.record_installed(keys, policy)
        cache.save()


def installed_policy(cfg: Config) -> str | None:
    """The digest given to the last ``record_installed``."""
    state = StateDir(cfg.state_dir)
    with state.lock(cfg.lock_timeout):
        return PeerCache(state).installed_policy
