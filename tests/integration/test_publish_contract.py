"""The publishing contract: one test class that every backend passes, against the real lab.

Plan never changes anything and is repeatable; apply converges (the next plan is empty) and
verifies from the outside; a rollover adds the next pin, then drops the old one; mode
``none`` then withdrawal leave nothing. Each backend subclass only says how to build the
backend and which host name it publishes for.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import Lab
from lab.procs import free_ports
from oeagent import publish
from oeagent.publish.base import Backend
from oeagent.publish.wellknown import WellKnownBackend, serve_file
from oeagent.state import StateDir
from tests.integration.publish_support import (
    REPO,
    Identity,
    desired,
    enrolled,
    fresh_name,
    new_key,
    wait_until,
)

pytestmark = pytest.mark.lab
TIMEOUT = 15.0


class BackendContract:
    """Every backend: subclasses provide the ``backend`` and ``fqdn`` fixtures."""

    @pytest.fixture
    def fqdn(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    def backend(self) -> Backend:
        raise NotImplementedError

    def test_plan_changes_nothing_and_is_repeatable(self, backend: Backend, fqdn: str) -> None:
        want = desired(fqdn, new_key())
        first = backend.plan(want)
        assert not first.empty
        assert [str(d) for d in backend.plan(want).diffs] == [str(d) for d in first.diffs]
        assert backend.plan(None).empty  # nothing was published by planning

    def test_apply_converges_and_verifies(self, backend: Backend, fqdn: str) -> None:
        want = desired(fqdn, new_key())
        applied = backend.apply(backend.plan(want))
        assert applied.attempts == 1
        assert backend.plan(want).empty
        assert backend.apply(backend.plan(want)).attempts == 0  # an empty plan sends nothing
        result = backend.verify(want, TIMEOUT)
        assert result.ok, result.as_dict()

    def test_rollover_adds_the_next_pin_then_drops_the_old(self, backend: Backend,
                                                            fqdn: str) -> None:
        old, following = new_key(), new_key()
        backend.apply(backend.plan(desired(fqdn, old)))
        both = desired(fqdn, old, following)
        assert backend.apply(backend.plan(both)).diffs
        assert backend.verify(both, TIMEOUT).ok
        after = desired(fqdn, following)
        assert backend.apply(backend.plan(after)).diffs
        assert backend.verify(after, TIMEOUT).ok
        assert backend.plan(after).empty

    def test_mode_none_then_withdraw_leaves_nothing(self, backend: Backend, fqdn: str) -> None:
        backend.apply(backend.plan(desired(fqdn, new_key())))
        none = desired(fqdn, mode="none")
        backend.apply(backend.plan(none))
        assert backend.verify(none, TIMEOUT).ok
        withdrawn = backend.withdraw()
        assert withdrawn.diffs
        assert backend.plan(None).empty
        result = backend.verify(None, TIMEOUT)
        assert result.ok, result.as_dict()


class TestRfc2136(BackendContract):
    @pytest.fixture
    def fqdn(self, lab: Lab) -> str:
        return fresh_name(lab)

    @pytest.fixture
    def backend(self, lab: Lab, fqdn: str, make_lab_config: object, tmp_path: Path) -> Backend:
        path = make_lab_config({"host.names": [fqdn], "publish.backends": ["rfc2136"]})  # type: ignore[operator]
        from oeagent import config

        cfg = config.load(path)
        return publish.make("rfc2136", cfg, StateDir(cfg.state_dir))


class TestZonefile(BackendContract):
    @pytest.fixture
    def fqdn(self) -> str:
        return "server.oe.test"

    @pytest.fixture
    def backend(self, make_lab_config: object) -> Backend:
        path = make_lab_config({"publish.backends": ["zonefile"]})  # type: ignore[operator]
        from oeagent import config

        cfg = config.load(path)
        return publish.make("zonefile", cfg, StateDir(cfg.state_dir))


@pytest.fixture(scope="module")
def identity(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Identity:
    """One enrolled host for the document backends: the HTTPS check needs its certificate."""
    return enrolled(lab, tmp_path_factory.mktemp("identity"))


@pytest.fixture(scope="module")
def nginx(lab: Lab, identity: Identity) -> Iterator[Path]:
    """The lab's nginx serving the identity's web root with its certificate."""
    webroot = identity.root / "www"
    webroot.mkdir(exist_ok=True)
    lab.start_nginx(identity.fullchain, identity.key, webroot)
    yield webroot
    lab.stop_nginx()


@pytest.fixture(scope="module")
def server(identity: Identity) -> Iterator[tuple[int, Path]]:
    """``oeagent serve`` on a free port, stopped with SIGTERM (it must exit 0)."""
    (port,) = free_ports(1)
    path = identity.reconfigure({"publish.wellknown.mode": "serve",
                                 "publish.wellknown.port": port}, name="serve.toml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "oeagent", "--config", str(path), "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    try:
        assert wait_until(listening, 10), "oeagent serve did not start listening"
        yield port, path
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "[serve] serving https://" in out


class TestWellKnownWebroot(BackendContract):
    @pytest.fixture
    def fqdn(self, identity: Identity) -> str:
        return identity.name

    @pytest.fixture
    def backend(self, identity: Identity, nginx: Path) -> Iterator[Backend]:
        cfg = identity.config
        backend = publish.make("wellknown", cfg, StateDir(cfg.state_dir))
        assert isinstance(backend, WellKnownBackend)
        assert backend.path == WellKnownBackend.webroot_path(nginx)
        yield backend
        backend.withdraw()


class TestWellKnownServe(BackendContract):
    """``oeagent serve`` answers the document with the enrolled certificate."""

    @pytest.fixture
    def fqdn(self, identity: Identity) -> str:
        return identity.name

    @pytest.fixture
    def backend(self, identity: Identity, server: tuple[int, Path]) -> Iterator[Backend]:
        from oeagent import config

        cfg = config.load(server[1])
        backend = publish.make("wellknown", cfg, StateDir(cfg.state_dir))
        assert isinstance(backend, WellKnownBackend)
        assert backend.path == serve_file(cfg.state_dir)
        yield backend
        backend.withdraw()
