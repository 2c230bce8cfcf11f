"""``oeagent policy`` meeting a broken ipsec directory: one clear error naming the path
(exit 1), never an internal error (exit 70), and nothing changed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("ipsec") is None, reason="libreswan not installed")


def run_policy(tmp_path: Path, ipsec_dir: Path, *extra: str) -> tuple[int, dict[str, object]]:
    config = tmp_path / "oeagent.toml"
    # The CA as an address: nothing to resolve, so no resolver is waited for.
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\nhost.names = ["a.example.org"]\n'
        'acme.directory = "https://127.0.0.1:14000/dir"\n'
        f'nss.database = "sql:{tmp_path / "nss"}"\n'
        f'[pluto]\nipsec_dir = "{ipsec_dir}"\nctlsocket = "{tmp_path / "pluto.ctl"}"\n'
        f'config = "{tmp_path / "ipsec.conf"}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "oeagent", "--config", str(config), "--json", "policy", *extra],
        capture_output=True, text=True, cwd=REPO, check=False, timeout=120,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("extra", [("--dry-run",), ()])
def test_ipsec_dir_that_is_a_file(tmp_path: Path, extra: tuple[str, ...]) -> None:
    ipsec_dir = tmp_path / "ipsec.d"
    ipsec_dir.write_text("not a directory\n")
    code, document = run_policy(tmp_path, ipsec_dir, *extra)
    assert code == 1, document
    assert str(ipsec_dir) in str(document["error"])
    assert "internal error" not in str(document["error"])
    assert ipsec_dir.read_text() == "not a directory\n"


@pytest.mark.parametrize("extra", [("--dry-run",), ()])
def test_policy_file_that_is_not_utf8(tmp_path: Path, extra: tuple[str, ...]) -> None:
    ipsec_dir = tmp_path / "ipsec.d"
    ipsec_dir.mkdir()
    (ipsec_dir / "oeagent.conf").write_bytes(b"# edited by hand: caf\xe9\n")
    code, document = run_policy(tmp_path, ipsec_dir, *extra)
    assert code == 1, document
    assert str(ipsec_dir / "oeagent.conf") in str(document["error"])
    assert "UTF-8" in str(document["error"])
    assert (ipsec_dir / "oeagent.conf").read_bytes() == b"# edited by hand: caf\xe9\n"


def test_acme_directory_host_with_a_trailing_dot(tmp_path: Path) -> None:
    """The CA's host is kept reachable in clear: "ca.example." was looked up as
    "ca.example.." (dns.name.EmptyLabel, exit 70)."""
    config = tmp_path / "oeagent.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\nhost.names = ["a.example.org"]\n'
        'acme.directory = "https://CA.Example./dir"\n'
        f'nss.database = "sql:{tmp_path / "nss"}"\n'
        '[discovery]\nresolver_port = 9\ndns_timeout = 0.5\n'
        f'[pluto]\nipsec_dir = "{tmp_path / "ipsec.d"}"\nctlsocket = "{tmp_path / "pluto.ctl"}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "oeagent", "--config", str(config), "--json", "policy",
         "--dry-run"], capture_output=True, text=True, cwd=REPO, check=False, timeout=120)
    document = json.loads(proc.stdout)
    assert proc.returncode == 0, document
    assert any("ca.example" in step["message"] for step in document["steps"])


def test_resolv_conf_with_a_byte_that_is_not_utf8(tmp_path: Path) -> None:
    """A Latin-1 comment in /etc/resolv.conf raised UnicodeDecodeError out of policy (exit
    70); the name servers on the other lines must still be kept reachable."""
    from oeagent.policy.model import resolv_conf_servers

    resolv = tmp_path / "resolv.conf"
    resolv.write_bytes(b"# r\xe9seau du bureau\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\n")
    assert resolv_conf_servers(resolv) == ["192.0.2.53", "fe80::1"]


@pytest.mark.parametrize("command", [("policy",), ("unenroll", "--remove-nss")])
def test_ctlsocket_path_through_a_file(tmp_path: Path, command: tuple[str, ...]) -> None:
    """pluto.ctlsocket under a regular file: only FileNotFoundError was expected when asking
    whether pluto runs, and NotADirectoryError came out as exit 70."""
    (tmp_path / "file").write_text("not a directory\n")
    config = tmp_path / "oeagent.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\nhost.names = ["a.example.org"]\n'
        'acme.directory = "https://127.0.0.1:14000/dir"\n'
        f'nss.database = "sql:{tmp_path / "nss"}"\n'
        f'[pluto]\nipsec_dir = "{tmp_path / "ipsec.d"}"\n'
        f'ctlsocket = "{tmp_path / "file" / "pluto.ctl"}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "oeagent", "--config", str(config), "--json", *command],
        capture_output=True, text=True, cwd=REPO, check=False, timeout=120)
    document = json.loads(proc.stdout)
    assert proc.returncode in (0, 1), document
    assert "internal error" not in str(document["error"]) and "Traceback" not in proc.stderr
    if proc.returncode == 1:
        assert "pluto.ctlsocket" in str(document["error"]), document


def test_a_dry_run_leaves_no_state_directory_behind(tmp_path: Path) -> None:
    """policy --dry-run took the state lock, which created the state directory (and its
    subdirectories and lock file) on a host that had none: a dry run changed the host."""
    ipsec_dir = tmp_path / "ipsec.d"
    ipsec_dir.mkdir()
    code, document = run_policy(tmp_path, ipsec_dir, "--dry-run")
    assert code == 0, document
    assert document["dry_run"] is True and document["diff"]
    assert not (tmp_path / "state").exists()
    assert sorted(p.name for p in ipsec_dir.iterdir()) == []


def test_ctlsocket_that_is_not_a_socket_is_said_and_nothing_is_installed(tmp_path: Path) -> None:
    """pluto.ctlsocket naming a regular file: policy took it for "pluto is not running" and
    installed files no pluto would load until restarted, while renewals said "not a
    socket". Both now say the path is wrong, before anything is written."""
    ipsec_dir = tmp_path / "ipsec.d"
    ipsec_dir.mkdir()
    (tmp_path / "pluto.ctl").write_text("")
    code, document = run_policy(tmp_path, ipsec_dir)
    assert code == 1, document
    assert "is not a socket; is pluto.ctlsocket right?" in str(document["error"]), document
    assert sorted(p.name for p in ipsec_dir.iterdir()) == []
