"""The fault tests get a lab of their own: they kill, pause and restart its daemons, which
must not disturb the session's shared lab."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import Lab
from tests.faults.harness import Host, new_host


@pytest.fixture(scope="package")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if shutil.which("pebble") is None:
        pytest.skip("lab programs not installed (run `make deps`)")
    the_lab = Lab(tmp_path_factory.mktemp("faultlab"))
    try:
        the_lab.up()
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture
def host(lab: Lab, tmp_path: Path) -> Iterator[Host]:
    """A host enrolled against the fault lab and published (rfc2136) into the signed zone,
    with an OE policy installed; every fault test starts from this working state."""
    the_host = new_host(lab, tmp_path)
    try:
        yield the_host
    finally:
        the_host.cleanup()
