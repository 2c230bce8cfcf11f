"""The agent against the real lab: renews on time, survives a CA outage, SIGTERM, SIGHUP.

Certificates live 20 seconds (``conftest.VALIDITY``). NSS is inspected with NSS's own tools.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from lab import Lab
from lab.procs import stop as stop_daemon
from oeagent import config as config_module

from .conftest import AgentProcess, NotifySocket, ShortConfig, oeagent

pytestmark = pytest.mark.lab
StartAgent = Callable[..., AgentProcess]


def nss_certs(config: Path) -> list[x509.Certificate]:
    cfg = config_module.load(config)
    done = subprocess.run(["certutil", "-L", "-d", cfg.nss.database, "-n", cfg.nss.nickname,
                           "-a"], capture_output=True, check=False)
    return x509.load_pem_x509_certificates(done.stdout) if done.returncode == 0 else []


def state_serial(config: Path) -> str:
    cfg = config_module.load(config)
    return str(json.loads((cfg.state_dir / "current.json").read_text())["serial"])


def nss_serial(config: Path) -> str:
    certs = nss_certs(config)
    assert len(certs) == 1, f"NSS holds {len(certs)} certificates under the nickname"
    return format(certs[0].serial_number, "x")


def test_agent_renews_on_time_and_talks_to_systemd(short_config: ShortConfig, short_dir: Path,
                                                   agents: StartAgent) -> None:
    config = short_config()
    notify = NotifySocket(short_dir / "notify")
    try:
        agent = agents(config, env={"NOTIFY_SOCKET": str(notify.path),
                                    "WATCHDOG_USEC": "4000000"})
        agent.wait_for(r"\[nss\] certificate \w+ installed", 30)  # nothing enrolled: enrolls
        first = nss_certs(config)[0]
        renewed = agent.wait_for(r"\[nss\] certificate \w+ replaced", 30)
        assert renewed
        agent.wait_for(r"renew: next run at", 10, count=3)
        # Renewed on time: within a second or two of the jittered rule's time (half the
        # lifetime left, minus up to 5 % of it), and long before the old one expired.
        due_line = agent.wait_for(r"a new certificate is needed: renewal was due at", 5)[0]
        logged = dt.datetime.strptime(due_line[:23], "%Y-%m-%d %H:%M:%S,%f").replace(
            tzinfo=dt.UTC)
        due = dt.datetime.fromisoformat(due_line.rsplit("renewal was due at ", 1)[1])
        lifetime = first.not_valid_after_utc - first.not_valid_before_utc
        assert dt.timedelta(0) <= logged - due < dt.timedelta(seconds=3)
        assert first.not_valid_after_utc - lifetime * 0.55 <= due \
            <= first.not_valid_after_utc - lifetime * 0.5
        kept = [line for line in agent.lines if "[store] kept certificate" in line]
        assert len(kept) >= 2
        new_serial = nss_serial(config)
        assert new_serial == state_serial(config) != format(first.serial_number, "x")
        assert subprocess.run(["certutil", "-V", "-u", "V", "-d",
                               config_module.load(config).nss.database, "-n", "oeagent"],
                              capture_output=True, check=False).returncode == 0
        assert agent.stop() == 0
    finally:
        notify.close()
    assert notify.messages[0].startswith("READY=1")
    assert "WATCHDOG=1" in notify.messages
    assert any(m.startswith("STOPPING=1") for m in notify.messages)
    assert any("agent stopping on SIGTERM" in line for line in agent.lines)


def stop_pebble(lab: Lab) -> None:
    _, daemons = lab._load()
    stop_daemon(daemons["pebble"], lab._popens.pop("pebble", None))


def test_ca_down_keeps_working_certificate_backs_off_then_recovers(
        short_lab: Lab, short_config: ShortConfig, agents: StartAgent) -> None:
    config = short_config()
    assert oeagent(config, "enroll").returncode == 0
    working = nss_serial(config)
    stop_pebble(short_lab)
    try:
        agent = agents(config)
        failures = agent.wait_for(r"renewal failed \(\d+ in a row\)", 30, count=2)
        assert "the working certificate stays deployed" in failures[0]
        # Nothing was touched: NSS still holds exactly the working certificate.
        assert nss_serial(config) == working == state_serial(config)
        record = json.loads((config_module.load(config).state_dir / "renewal.json").read_text())
        assert record["failures"] >= 2 and "unreachable" in record["last_failure"]["reason"]
    finally:
        short_lab.restart_pebble()  # a new Pebble: new root, no accounts; oeagent copes
    agent.wait_for(r"\[nss\] certificate \w+ replaced", 30)
    assert nss_serial(config) == state_serial(config) != working
    assert agent.stop() == 0
    record = json.loads((config_module.load(config).state_dir / "renewal.json").read_text())
    assert record["failures"] == 0 and record["last_success"]["serial"] == state_serial(config)


DRIVER = textwrap.dedent('''
    """Runs the real CLI, but sends itself SIGTERM while the CA validates the challenge."""
    import os, signal, sys
    from oeagent.ca import order
    real = order.answer_and_wait
    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)
    order.answer_and_wait = interrupted
    from oeagent.cli import main
    sys.exit(main(sys.argv[1:]))
''')


def test_sigterm_mid_renewal_abandons_cleanly_and_restart_converges(
        short_config: ShortConfig, agents: StartAgent, tmp_path: Path) -> None:
    config = short_config()
    cfg = config_module.load(config)
    assert oeagent(config, "enroll").returncode == 0
    working = nss_serial(config)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    agent = agents(config, driver=driver)
    agent.wait_for(r"abandoned for SIGTERM", 30)
    assert agent.proc.wait(15) == 0  # it stops by itself: the signal came from inside
    agent.stop()
    # Nothing half-done: same certificate everywhere, no swap journal, no temp files, and
    # the http-01 responder's port is free again.
    assert nss_serial(config) == working == state_serial(config)
    assert not any(cfg.state_dir.joinpath("nss-work").iterdir())
    assert not [p for p in cfg.state_dir.rglob("*.tmp")]
    with socket.socket() as sock:  # (REUSEADDR: Pebble's connection may sit in TIME_WAIT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.challenge.http.listen_address, cfg.challenge.http.port))
    # A restart picks up where it was: the renewal is still due and now happens.
    agent = agents(config)
    agent.wait_for(r"\[nss\] certificate \w+ replaced", 30)
    assert agent.stop() == 0
    assert nss_serial(config) == state_serial(config) != working


def test_sighup_with_broken_config_keeps_the_agent_on_the_old_one(
        short_config: ShortConfig, agents: StartAgent) -> None:
    config = short_config()
    good = config.read_text()
    agent = agents(config)
    agent.wait_for(r"renew: next run at", 30, count=2)  # (the first is the start-up one)
    # Between jobs the agent holds no lock: a one-shot command runs at once.
    done = oeagent(config, "renew", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["issued"] is False, done.stderr
    config.write_text(good + "\nbogus_key = 1\n")
    agent.proc.send_signal(signal.SIGHUP)
    line = agent.wait_for(r"reload failed; keeping the old configuration", 10)[0]
    assert "bogus_key: unknown key" in line
    assert agent.proc.poll() is None
    config.write_text(good)
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for(r"reloaded the configuration", 10)
    agent.wait_for(r"renew: next run at", 10, count=3)
    assert agent.stop(signal.SIGINT) == 0


CRITICAL_DRIVER = textwrap.dedent('''
    """Runs the real CLI, but sends itself SIGTERM as the NSS swap begins."""
    import os, signal, sys
    from oeagent import enroll
    real = enroll.deploy_to_nss
    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)
    enroll.deploy_to_nss = interrupted
    from oeagent.cli import main
    sys.exit(main(sys.argv[1:]))
''')


def test_sigterm_during_the_nss_swap_lets_it_finish(short_config: ShortConfig,
                                                    agents: StartAgent, tmp_path: Path) -> None:
    config = short_config()
    driver = tmp_path / "driver.py"
    driver.write_text(CRITICAL_DRIVER)
    agent = agents(config, driver=driver)  # nothing enrolled: the first job deploys at once
    assert agent.proc.wait(30) == 0
    agent.stop()
    assert not any("abandoned" in line for line in agent.lines)
    assert any("[pluto]" in line for line in agent.lines)  # the deploy ran to its end
    assert any("agent stopping on SIGTERM" in line for line in agent.lines)
    assert nss_serial(config) == state_serial(config)
    record = json.loads((config_module.load(config).state_dir / "renewal.json").read_text())
    assert record["last_success"]["serial"] == state_serial(config)
