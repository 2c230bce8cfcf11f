"""Shared fixtures: one lab (Pebble, BIND, unbound) per test session, a fresh config per test."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

# The lab package sits at the top of the repository and is not installed with oeagent.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lab import Lab  # noqa: E402

# oeagent refuses a config group or others can write (it names commands run as root), so
# the configs the tests write must not be group-writable whatever the caller's umask (a
# login shell under Debian's user private groups has 002).
os.umask(0o022)

LAB_PROGRAMS = ("pebble", "named", "unbound", "tsig-keygen", "named-checkconf", "unbound-checkconf")

MakeConfig = Callable[..., Path]


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A running lab shared by the whole session; always stopped at the end."""
    missing = [p for p in LAB_PROGRAMS if shutil.which(p) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"lab programs not installed in CI: {', '.join(missing)}")
        pytest.skip(f"lab programs not installed: {', '.join(missing)} (run `make deps`)")
    the_lab = Lab(tmp_path_factory.mktemp("lab"))
    try:
        the_lab.up()  # stops whatever it started if it fails
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture
def make_lab_config(lab: Lab, tmp_path: Path) -> MakeConfig:
    """``make_lab_config(overrides=None, name="oeagent.toml")``: a config for this test only.

    State, NSS database, webroot, pluto paths all live under the test's ``tmp_path``;
    overrides are nested or dotted keys, e.g. ``{"host.names": ["www.oe.test"]}``.
    """

    def make(overrides: Mapping[str, Any] | None = None, name: str = "oeagent.toml") -> Path:
        return lab.write_config(tmp_path / name, overrides, root=tmp_path)

    return make


@pytest.fixture
def lab_config_path(make_lab_config: MakeConfig) -> Path:
    """The lab's default config (http-01 standalone, server.oe.test), private to this test."""
    return make_lab_config()
