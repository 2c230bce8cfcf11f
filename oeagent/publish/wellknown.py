"""The ``wellknown`` backend: the JSON document at ``https://<fqdn>/.well-known/oe-ipsec``.

For hosts whose zone is not signed. The document is written atomically (a web server never
serves half of it) either into the web root of the host's own web server (``webroot`` mode)
or into the state directory, where ``oeagent serve`` answers it over HTTPS with the enrolled
certificate (``serve`` mode). Withdrawing removes the file, so clients get 404 and, having no
cached policy, do nothing; before that, ``unenroll`` publishes mode ``none`` for a max_age.

Verification fetches the document over real HTTPS, as a client would: the address from the
validating resolver, then ``oeagent.wellknown_fetch`` (the rules discovery fetches by: TLS
verified for the fqdn, no redirects, 64 KiB, deadlines); byte-for-byte the document.
"""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path

from oeagent import fsio, resolver, wellknown_fetch
from oeagent.advertisement import WELL_KNOWN_PATH
from oeagent.errors import StateError
from oeagent.publish.base import Backend, Check, Desired, Diff, Plan, Verification


def document_bytes(desired: Desired) -> bytes:
    return desired.advert.document_bytes(desired.expires)


class WellKnownBackend(Backend):
    name = "wellknown"

    def __init__(self, path: Path, fqdn: str, port: int, check_with: resolver.Resolver,
                 ca_bundle: Path | None) -> None:
        self.path = path
        """Where the document file lives (webroot/.well-known/oe-ipsec or the serve file)."""
        self.fqdn = fqdn
        self.port = port
        self.resolver = check_with
        self.ca_bundle = ca_bundle
        self._tls: ssl.SSLContext | None = None  # loaded when verifying, not for a plan

    @staticmethod
    def webroot_path(webroot: Path) -> Path:
        return webroot / WELL_KNOWN_PATH.lstrip("/")

    def _current(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc.strerror}") from None

    def plan(self, desired: Desired | None) -> Plan:
        current = self._current()
        wanted = document_bytes(desired) if desired is not None else None
        diffs: list[Diff] = []
        if current != wanted:
            if current is not None:
                diffs.append(Diff("-", str(self.path), _summary(current)))
            if wanted is not None:
                diffs.append(Diff("+", str(self.path), _summary(wanted)))
        return Plan(self.name, desired, diffs, detail=wanted)

    def _apply(self, plan: Plan) -> None:
        wanted: bytes | None = plan.detail
        try:
            if wanted is None:
                self.path.unlink(missing_ok=True)
                return
            # The web server (often another user) must read it: 0644 file, 0755 directory.
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            fsio.atomic_write(self.path, wanted, fsio.PUBLIC_FILE)
        except OSError as exc:
            raise StateError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def verify(self, desired: Desired | None, timeout: float) -> Verification:
        wanted = document_bytes(desired) if desired is not None else None
        result = Verification(self.name)
        url = f"https://{self.fqdn}:{self.port}{WELL_KNOWN_PATH}"
        found = resolver.addresses(self.resolver, self.fqdn)
        if not found:
            result.checks.append(Check(url, False, f"{self.fqdn} has no address at resolver "
                                       f"{self.resolver.address}#{self.resolver.port}"))
            return result
        outcome: dict[str, tuple[bool, str]] = {}

        def check() -> bool:
            for address in found:
                outcome[address] = self._check_one(address, wanted)
            return all(ok for ok, _ in outcome.values())

        resolver.poll(check, timeout)
        for address, (ok, detail) in outcome.items():
            result.checks.append(Check(f"{url} at {address}", ok, detail))
        return result

    def _check_one(self, address: str, wanted: bytes | None) -> tuple[bool, str]:
        try:
            if self._tls is None:
                self._tls = wellknown_fetch.tls_context(self.ca_bundle)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            return False, f"cannot fetch: cannot load the roots {self.ca_bundle}: {exc}"
        try:
            got = wellknown_fetch.get(self.fqdn, address, port=self.port, context=self._tls,
                                      timeout=min(10.0, self.resolver.timeout * 3))
        except wellknown_fetch.FetchError as exc:
            return False, f"cannot fetch: {exc}"
        if wanted is None:
            return got.status == 404, f"HTTP {got.status} (withdrawn: 404 expected)"
        if got.status != 200:
            return False, f"HTTP {got.status} (only 200 counts; redirects are not followed)"
        if got.body != wanted:
            return False, "HTTP 200 but the document differs from what was published"
        return True, f"HTTP 200, TLS verified for {self.fqdn}, the published document"


def _summary(data: bytes) -> str:
    try:
        doc = json.loads(data)
        return (f"document id={doc.get('id')} mode={doc.get('mode')} "
                f"pins={len(doc.get('pins', []))} expires={doc.get('expires')}")
    except ValueError:
        return f"{len(data)} bytes (not JSON)"


def serve_file(state_root: Path) -> Path:
    """Where the document lives in ``serve`` mode (read by ``oeagent serve`` per request)."""
    return Path(os.fspath(state_root)) / "wellknown" / "oe-ipsec.json"
