"""``oeagent policy`` converges with a real pluto after an interrupted or failed load.

The files on disk are not the whole truth: a run killed after writing them but before pluto
loaded them, or a load that timed out, used to leave pluto without conns while the next run
said "nothing to do". Each test runs a real pluto in a lab namespace (198.51.100.0/24).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from lab import Lab
from lab.netns import in_namespace
from lab.pluto import Pluto
from oeagent import config as config_module
from oeagent import libreswan, proc
from oeagent.policy import PolicyError, apply, install, render
from oeagent.report import Reporter
from tests.integration.test_policy import (
    NOW,
    REPO,
    _node_config,
    _policy_cli,
    plutos,
    remember_peer,
)

pytestmark = pytest.mark.lab


def _conns(node: Pluto) -> list[str]:
    return render.conn_names((node.ipsec_dir / render.CONF).read_text())


def _held(node: Pluto) -> set[str]:
    return libreswan.held_conns(node.whack("--status"))


def _files(node: Pluto) -> dict[Path, str]:
    return {p: p.read_text() for p in sorted(node.ipsec_dir.rglob("*")) if p.is_file()}


def _pluto_policy(node: Pluto, conn: str) -> str:
    """The ``policy:`` line pluto shows for ``conn`` (``...+failureDROP`` / ``+NEGO_PASS+failurePASS``)."""
    lines = [ln for ln in node.whack("--status").splitlines()
             if f'"{conn}":   policy:' in ln]
    assert len(lines) == 1, lines
    return lines[0]


def _pluto_pid(node: Pluto) -> int:
    return int((node.run_dir / "pluto.pid").read_text().split()[0])


def test_pluto_not_running_then_started_loads_the_policy(lab: Lab) -> None:
    """Fault "pluto not running": the files are installed (exit 0); a pluto started later
    (libreswan's service runs `addconn --autoall` after pluto) holds every conn, and the
    next `oeagent policy` finds nothing to do."""
    with plutos("cold") as (node,):
        remember_peer(node.dir / "state", "peer.oe.test", "198.51.100.77")
        cfg = _node_config(lab, node, {})
        done = _policy_cli(node, cfg)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "[pluto] pluto is not running; it loads the policy when it starts" in done.stdout
        conns = _conns(node)
        assert "oeagent-peer-peer_oe_test-1" in conns
        node.start()
        node.load()
        assert set(conns) <= _held(node), node.whack("--status")
        xfrm = node.host.run(["ip", "xfrm", "policy"]).stdout
        assert f"src {node.host.address}/32 dst 198.51.100.77/32" in xfrm
        again = _policy_cli(node, cfg)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "pluto runs it; nothing to do" in again.stdout, again.stdout


def test_killed_before_loading_the_rerun_converges(lab: Lab) -> None:
    """SIGKILL after `[install]` (files written) and before pluto loaded them. pluto is
    stopped (SIGSTOP) while oeagent runs, so the kill lands before any conn reaches it."""
    with plutos("killed") as (node,):
        node.start()
        moody = "oeagent-peer-moody_oe_test-1"
        cfg = _node_config(lab, node, {"policy.peers": ["moody.oe.test 198.51.100.80"]})
        first = _policy_cli(node, cfg)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "failureDROP" in _pluto_policy(node, moody)
        # The change: one new peer (pluto lacks it), one peer from enforce to testing (pluto
        # holds the old version), and the NULL group's ranges (pluto must reread the group).
        remember_peer(node.dir / "state", "late.oe.test", "198.51.100.78")
        cfg = _node_config(lab, node, {"policy.private_or_clear": ["198.51.100.0/25"],
                                       "policy.peers": ["moody.oe.test 198.51.100.80 ecdsa "
                                                        "testing"]})
        pid = _pluto_pid(node)
        os.kill(pid, signal.SIGSTOP)
        try:
            run = subprocess.Popen(
                node.host.argv([sys.executable, "-m", "oeagent", "--config", str(cfg),
                                "policy"]),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
            assert run.stdout is not None
            seen = []
            for line in run.stdout:
                seen.append(line)
                if line.startswith("[install]"):
                    # The whole group: oeagent and the whack it waits in.
                    os.killpg(run.pid, signal.SIGKILL)
                    break
            run.communicate(timeout=30)
            assert run.returncode == -signal.SIGKILL, "".join(seen)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert "oeagent-peer-late_oe_test-1" in _conns(node)
        assert "oeagent-peer-late_oe_test-1" not in _held(node)
        assert "failureDROP" in _pluto_policy(node, moody)
        assert "198.51.100.0/25" in (node.ipsec_dir / "policies" / "oeagent-private-or-clear"
                                     ).read_text()

        rerun = _policy_cli(node, cfg)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert "pluto lacks oeagent-peer-late_oe_test-1: loaded the installed policy" in \
            rerun.stdout, rerun.stdout
        assert set(_conns(node)) <= _held(node)
        # The conn pluto held in its old version was replaced.
        assert "NEGO_PASS+failurePASS" in _pluto_policy(node, moody)
        # The groups were reread: the NULL group's instance is the new range.
        status = node.whack("--status")
        assert '"oeagent-private-or-clear#198.51.100.0/25"' in status, status
        xfrm = node.host.run(["ip", "xfrm", "policy"]).stdout
        assert f"src {node.host.address}/32 dst 198.51.100.78/32" in xfrm
        # Converged: the run after that has nothing to do.
        last = _policy_cli(node, cfg)
        assert last.returncode == 0 and "nothing to do" in last.stdout, last.stdout


def test_load_timeout_restores_the_previous_files(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """pluto stops answering (SIGSTOP) while oeagent adds the new conns: proc.run's timeout
    (a plain OeagentError, not a PolicyError) must still restore the previous files and load
    them once pluto answers again. oeagent runs in-process inside pluto's namespace, with a
    2 s timeout instead of 60 s."""
    with plutos("slow") as (node,):
        node.start()
        config_path = _node_config(lab, node, {})
        with in_namespace(node.host.namespace):
            apply(config_module.load(config_path), Reporter(stream=io.StringIO()), now=NOW)
        before = _files(node)
        held_before = _held(node)
        remember_peer(node.dir / "state", "stuck.oe.test", "198.51.100.79")
        pid = _pluto_pid(node)
        real_run = proc.run
        stopped: list[Sequence[str]] = []
        addconn = libreswan.command("addconn")

        def run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
            if not stopped and list(argv)[:len(addconn)] == addconn and \
                    "--ctlsocket" in argv:
                stopped.append(argv)
                os.kill(pid, signal.SIGSTOP)
                try:
                    return real_run(argv, **{**kwargs, "timeout": 2})
                finally:
                    os.kill(pid, signal.SIGCONT)
            return real_run(argv, **kwargs)

        monkeypatch.setattr(install.proc, "run", run)
        with in_namespace(node.host.namespace), pytest.raises(PolicyError) as failed:
            apply(config_module.load(config_path), Reporter(stream=io.StringIO()), now=NOW)
        assert stopped, "oeagent never asked pluto to add the new conn"
        message = str(failed.value)
        assert "did not finish within 2 s" in message, message
        assert "the previous policy is restored and loaded" in message, message
        assert _files(node) == before
        assert _held(node) == held_before
        assert "oeagent-peer-stuck_oe_test-1" not in _held(node)

        monkeypatch.setattr(install.proc, "run", real_run)
        with in_namespace(node.host.namespace):
            apply(config_module.load(config_path), Reporter(stream=io.StringIO()), now=NOW)
        assert "oeagent-peer-stuck_oe_test-1" in _held(node)
        assert set(_conns(node)) <= _held(node)
