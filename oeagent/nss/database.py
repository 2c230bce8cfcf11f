"""pluto's NSS database (``sql:DIR``), driven through certutil and pk12util.

Only what oeagent needs: create the database, list certificates and keys, add trust anchors,
verify a certificate, and the primitive deletes and imports that ``oeagent.nss.swap`` builds
the safe identity replacement from. Certificates are matched by fingerprint and keys by
key id (``oeagent.nss.certs``); running the tools and explaining their failures is
``oeagent.nss.tools``.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from oeagent import fsio, proc
from oeagent.errors import NssError
from oeagent.nss import anchors, tools
from oeagent.nss.certs import fingerprint, key_id, load_pem_bundle, pem
from oeagent.nss.password import password_file, private_temp_file, read_password_file
from oeagent.secrets import Secret

if TYPE_CHECKING:
    from oeagent.nss.swap import IdentityKey, InstallResult, RecoveryOutcome

log = logging.getLogger(__name__)

_READERS = 4
"""certutil processes reading one database at once (contents())."""

# certutil -L: the nickname padded to a column, then SSL,S/MIME,JAR/XPI trust flags.
_CERT_LINE = re.compile(r"^(?P<nick>\S.*?)\s+(?P<trust>[A-Za-z]*,[A-Za-z]*,[A-Za-z]*)\s*$")
# certutil -K: "< 0> ec       3c10...0010   oeagent"
_KEY_LINE = re.compile(r"^<\s*\d+>\s+(?P<type>\S+)\s+(?P<id>[0-9a-fA-F]+)\s+(?P<label>.*)$")


@dataclass(frozen=True)
class CertEntry:
    nickname: str
    trust: str


@dataclass(frozen=True)
class Contents:
    """What the database held when it was read: one listing, every certificate by nickname.

    One swap asks the same questions several times (is the anchor there, what is under the
    nickname, does another nickname hold the new subject, which nicknames exist): read once,
    a ``certutil -L`` and one ``-L -n NICK -a`` per nickname answer all of them, as long as
    this run has changed nothing since.
    """

    entries: tuple[CertEntry, ...]
    certificates: dict[str, list[x509.Certificate]]

    def nicknames(self) -> list[str]:
        return list(self.certificates)

    def nickname_of(self, cert: x509.Certificate) -> str | None:
        """The nickname ``cert`` is filed under (matched by fingerprint), or None."""
        wanted = fingerprint(cert)
        for nick, certs in self.certificates.items():
            if any(fingerprint(c) == wanted for c in certs):
                return nick
        return None

    def trust(self, nickname: str) -> list[str]:
        return [e.trust for e in self.entries if e.nickname == nickname]


@dataclass(frozen=True)
class KeyEntry:
    key_id: str
    """NSS CKA_ID, lower-case hex: SHA-1 of the EC point or RSA modulus."""
    key_type: str
    label: str


class NssDatabase:
    """One ``sql:DIR`` database, optionally protected by a (libreswan-style) password file."""

    def __init__(self, database: str, password_file: Path | None = None) -> None:
        if not database.startswith("sql:"):
            raise NssError(f"{database!r} is not an sql:DIRECTORY NSS database")
        self.database = database
        self.directory = Path(database.removeprefix("sql:"))
        self._password: Secret | None = (
            read_password_file(password_file) if password_file is not None else None
        )

    def __repr__(self) -> str:
        return f"NssDatabase({self.database!r})"

    # -- running the tools -------------------------------------------------------------

    def run(
        self, tool: str, args: Sequence[str | Path], what: str, *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run certutil/pk12util on this database; raise NssError naming ``what`` failed.

        The database password goes in through ``-f`` (certutil) or ``-k`` (pk12util).
        """
        return tools.run_tool(tool, args, self.database, self._password, what, check=check)

    def _failure(self, what: str, result: subprocess.CompletedProcess[str]) -> NssError:
        return tools.failure(what, result, self.database, has_password=self._password is not None)

    # -- creation ----------------------------------------------------------------------

    def exists(self) -> bool:
        return (self.directory / "cert9.db").exists() and (self.directory / "key4.db").exists()

    def ensure_exists(self) -> bool:
        """Create the directory (0700) and an empty database if missing; True if created."""
        if self.exists():
            return False
        if (self.directory / "cert8.db").exists():
            raise NssError(
                f"{self.directory} holds a legacy DBM database (cert8.db); upgrade it with "
                "'certutil --upgrade-merge' or 'ipsec checknss' first"
            )
        try:
            fsio.ensure_private_dir(self.directory)
        except OSError as exc:  # a file in the way, a read-only file system, ...
            raise NssError(f"cannot create the NSS database directory {self.directory} "
                           f"(nss.database): {exc.strerror}") from None
        with password_file(self._password) as pw:
            secret = ["-f", str(pw)] if self._password is not None else ["--empty-password"]
            result = proc.run(["certutil", "-N", "-d", self.database, *secret], check=False)
        if result.returncode != 0:
            raise self._failure(f"creating the NSS database {self.database}", result)
        log.info("created NSS database %s", self.database)
        return True

    def copy_to(self, directory: Path) -> NssDatabase:
        """A copy of this database (same password) in ``directory``, for trial runs."""
        for name in ("cert9.db", "key4.db", "pkcs11.txt"):
            if (self.directory / name).exists():
                shutil.copy2(self.directory / name, directory / name)
        copy = NssDatabase(f"sql:{directory}")
        copy._password = self._password
        return copy

    # -- listing -----------------------------------------------------------------------

    def list_certificates(self) -> list[CertEntry]:
        """Every ``certutil -L`` line: one entry per certificate (a nickname may repeat)."""
        out = self.run("certutil", ["-L"], "listing the certificates").stdout
        entries = []
        for line in out.splitlines()[3:]:  # two header lines and a blank line
            match = _CERT_LINE.match(line.rstrip())
            if match:
                entries.append(CertEntry(match["nick"], match["trust"]))
        return entries

    def certificates(self, nickname: str) -> list[x509.Certificate]:
        """All certificates filed under ``nickname``, newest-imported order not guaranteed."""
        what = f"reading the certificates of {nickname!r}"
        result = self.run("certutil", ["-L", "-n", nickname, "-a"], what, check=False)
        if result.returncode != 0:
            if "Could not find cert" in result.stderr:
                return []
            raise self._failure(what, result)
        return load_pem_bundle(result.stdout.encode("ascii"))

    def fingerprints(self, nickname: str) -> list[str]:
        return sorted(fingerprint(c) for c in self.certificates(nickname))

    def trust(self, nickname: str) -> list[str]:
        return [e.trust for e in self.list_certificates() if e.nickname == nickname]

    def keys(self) -> list[KeyEntry]:
        result = self.run("certutil", ["-K"], "listing the private keys", check=False)
        keys = []
        for line in result.stdout.splitlines():
            match = _KEY_LINE.match(line.strip())
            if match:
                keys.append(KeyEntry(match["id"].lower(), match["type"], match["label"].strip()))
        if result.returncode != 0 and "no keys found" not in result.stdout + result.stderr:
            raise self._failure("listing the private keys", result)
        return keys

    def key_ids(self) -> set[str]:
        return {k.key_id for k in self.keys()}

    def contents(self) -> Contents:
        """Everything ``certutil -L`` lists, each nickname's certificates read once (up to
        four at a time: they are independent questions, each a process)."""
        entries = tuple(self.list_certificates())
        nicknames = list(dict.fromkeys(e.nickname for e in entries))
        certs: dict[str, list[x509.Certificate]] = {}
        for start in range(0, len(nicknames), _READERS):
            reads = [
                (nick, tools.Started(partial(self.certificates, nick)))
                for nick in nicknames[start : start + _READERS]
            ]
            try:
                certs.update((nick, read.result()) for nick, read in reads)
            finally:
                for _, read in reads:
                    read.wait()
        return Contents(entries, certs)

    def orphan_keys(self) -> list[KeyEntry]:
        """Private keys that no certificate in the database belongs to (certutil -D leftovers)."""
        owned = {key_id(c) for certs in self.contents().certificates.values() for c in certs}
        return [k for k in self.keys() if k.key_id not in owned]

    # -- trust anchors (oeagent.nss.anchors) -------------------------------------------

    def add_trust_anchor(
        self,
        cert: x509.Certificate,
        nickname: str | None = None,
        contents: Contents | None = None,
    ) -> bool:
        """See ``oeagent.nss.anchors.add_trust_anchor``."""
        return anchors.add_trust_anchor(self, cert, nickname, contents)

    def add_trust_anchors(self, certs: Sequence[x509.Certificate]) -> int:
        return anchors.add_trust_anchors(self, certs)

    def add_trust_anchor_bundle(self, path: Path) -> int:
        return anchors.add_trust_anchor_bundle(self, path)

    # -- verification ------------------------------------------------------------------

    def verify(self, nickname: str, usage: str = "V") -> None:
        """``certutil -V -e -u V``: the chain must reach a trusted anchor in this database.

        ``V`` (TLS server) is what libreswan up to 5.2 accepts a peer certificate for (it
        tries TLS client, then TLS server); 5.3+ uses NSS's IPsec usage (``I``).
        """
        self.run(
            "certutil",
            ["-V", "-e", "-u", usage, "-n", nickname],
            f"verifying certificate {nickname!r} (usage {usage})",
        )

    # -- primitives for the swap -------------------------------------------------------

    def import_pkcs12(self, p12: Path, p12_password_file: Path, what: str) -> None:
        self.run("pk12util", ["-i", p12, "-w", p12_password_file], what)

    def export_pkcs12(self, nickname: str, p12: Path, p12_password_file: Path) -> None:
        self.run(
            "pk12util",
            ["-o", p12, "-n", nickname, "-w", p12_password_file],
            f"backing up {nickname!r}",
        )

    def add_certificate(self, cert: x509.Certificate, nickname: str, trust: str) -> None:
        with private_temp_file(pem([cert])) as pem_file:
            self.run(
                "certutil",
                ["-A", "-n", nickname, "-t", trust, "-a", "-i", pem_file],
                f"adding a certificate under {nickname!r}",
            )

    def delete_key(self, key_id_hex: str) -> None:
        self.run("certutil", ["-F", "-k", key_id_hex], f"deleting key {key_id_hex}")

    def purge(self, nickname: str, known: list[x509.Certificate] | None = None) -> int:
        """Delete every certificate under ``nickname`` and their private keys; the count.

        ``-F -n`` deletes the newest certificate and its key, but silently does nothing
        (exit 0) for a certificate without a key, so fall back to ``-D`` when a round made no
        progress, then delete keys that only those certificates owned. ``known``: what the
        caller has just read under the nickname, which saves the first listing; should more
        be there by now (another process added some), it goes on from what is there.
        """
        removed: list[x509.Certificate] = []  # those deleted with -D, whose keys stay behind
        certs = self.certificates(nickname) if known is None else list(known)
        count = len(certs)
        while certs:
            self.run("certutil", ["-F", "-n", nickname], f"deleting {nickname!r}")
            remaining = self.certificates(nickname)
            if len(remaining) > len(certs):  # more than known: start again from what is there
                count += len(remaining) - len(certs)
                certs = remaining
                continue
            if len(remaining) == len(certs):
                self.run("certutil", ["-D", "-n", nickname], f"deleting {nickname!r}")
                remaining = self.certificates(nickname)
                if len(remaining) >= len(certs):
                    raise NssError(f"deleting {nickname!r} made no progress")
                kept = {fingerprint(c) for c in remaining}
                removed.extend(c for c in certs if fingerprint(c) not in kept)
            certs = remaining
        # Only -D leaves keys behind; looking only then keeps the swap window short.
        stale = {key_id(c) for c in removed}
        if stale:
            for key in self.keys():
                if key.key_id in stale:
                    self.delete_key(key.key_id)
        return count

    # -- the identity (implemented in oeagent.nss.swap, which builds on this class) ----------

    def install_identity(
        self,
        nickname: str,
        key: IdentityKey,
        cert: x509.Certificate,
        chain: Sequence[x509.Certificate],
        work_dir: Path,
        *,
        verify: bool = True,
        contents: Contents | None = None,
    ) -> InstallResult:
        """See ``oeagent.nss.swap.install_identity``."""
        from oeagent.nss import swap

        return swap.install_identity(
            self, nickname, key, cert, chain, work_dir=work_dir, verify=verify, contents=contents
        )

    def recover(self, work_dir: Path) -> RecoveryOutcome:
        """See ``oeagent.nss.swap.recover``."""
        from oeagent.nss import swap

        return swap.recover(self, work_dir)

