"""Every program the lab, the tests and the benchmarks run comes from a package `make deps` installs.

A fresh machine has only what the Makefile's DEB_PACKAGES list brings (plus the Essential
and required packages of a minimal Debian): a program that happens to be on the developer's machine but is missing from the
list passes every local run and fails the first clean CI run (`nft` once did exactly that).
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Programs run by name from lab/, tests/, bench/ and scripts/ (oeagent itself runs certutil,
# pk12util and ipsec). Add a program here when you make the project run a new one.
PROGRAMS = (
    "certutil", "pk12util", "ipsec", "pebble", "named", "named-checkconf", "tsig-keygen",
    "unbound", "unbound-checkconf", "nginx", "openssl", "dig", "nsupdate", "ip", "nft",
    "sysctl", "mount", "umount", "findmnt", "systemd-analyze",
)
# Libraries the tests preload, by the glob they are found with (a missing one would make its
# tests skip, not fail).
LIBRARIES = ("/usr/lib/*/faketime/libfaketime.so.1",)


def _deb_packages() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^DEB_PACKAGES\s*:=\s*((?:.*\\\n)*.*)$", makefile, re.MULTILINE)
    assert match, "Makefile has no DEB_PACKAGES line"
    return set(match.group(1).replace("\\\n", " ").split())


def _owner(path: str) -> str:
    """The Debian package that ships ``path`` (usrmerge: also try the /bin and /sbin spelling)."""
    candidates = [path]
    if path.startswith("/usr/"):
        candidates.append(path[len("/usr"):])
    for candidate in candidates:
        found = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True,
                               text=True, check=False)
        if found.returncode == 0:
            return found.stdout.split(":", 1)[0].split(",")[0].strip()
    raise AssertionError(f"no Debian package ships {path}")


def _on_every_debian(package: str) -> bool:
    """Essential or Priority: required packages are in even a minimal (minbase) system."""
    found = subprocess.run(["dpkg-query", "-W", "-f=${Essential} ${Priority}", package],
                           capture_output=True, text=True, check=False)
    essential, _, priority = found.stdout.partition(" ")
    return essential == "yes" or priority == "required"


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian system")
def test_every_program_the_project_runs_is_installed_by_make_deps() -> None:
    listed = _deb_packages()
    found: dict[str, str | None] = {p: shutil.which(p) for p in PROGRAMS}
    found |= {pattern: next(iter(sorted(glob.glob(pattern))), None) for pattern in LIBRARIES}
    problems = []
    for what, path in found.items():
        if path is None:
            problems.append(f"{what}: not installed (is its package in DEB_PACKAGES?)")
        elif (package := _owner(str(Path(path).resolve()))) not in listed and \
                not _on_every_debian(package):
            problems.append(f"{what}: from package {package}, which DEB_PACKAGES lacks")
    assert not problems, "\n".join(problems)


def test_readme_names_the_packages_make_deps_installs() -> None:
    # The README's "two commands" section tells a newcomer what will be installed; it once
    # lacked libfaketime after the Makefile gained it.
    text = (ROOT / "README.md").read_text()
    match = re.search(r"Both install the Debian packages they need \(`([^`]*)`", text)
    assert match, "README no longer lists the Debian packages `make deps` installs"
    assert set(match.group(1).split()) == _deb_packages()
