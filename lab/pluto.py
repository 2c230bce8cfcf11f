"""One pluto per lab host: its own ipsec directory, NSS database, run directory and socket.

libreswan 4.10's pluto has no --ctlsocket option: the socket is ``<rundir>/pluto.ctl``, so
each host gets its own rundir (short paths: a Unix socket path has at most 107 bytes).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from lab.netns import Host
from lab.procs import LabError

PLUTO = "/usr/libexec/ipsec/pluto"

# Plain NULL-auth OE, as a host without oeagent runs it: encrypt to whoever speaks IKE,
# unauthenticated, and fall back to clear otherwise.
NULL_OE_CONF = """\
conn clear
    type=passthrough
    authby=never
    left=%defaultroute
    right=%group
    auto=ondemand

conn private-or-clear
    type=tunnel
    left=%defaultroute
    leftid=%null
    leftauth=null
    rightid=%null
    rightauth=null
    right=%opportunisticgroup
    negotiationshunt=hold
    failureshunt=passthrough
    keyingtries=1
    retransmit-timeout=3s
    auto=ondemand
"""


class Pluto:
    def __init__(self, host: Host, directory: Path) -> None:
        self.host = host
        self.dir = Path(directory)
        self.ipsec_dir = self.dir / "ipsec.d"
        self.nss_dir = self.dir / "nss"
        self.run_dir = self.dir / "run"
        self.ctlsocket = self.run_dir / "pluto.ctl"
        self.config = self.dir / "ipsec.conf"
        self.log = self.dir / "pluto.log"
        if len(str(self.ctlsocket)) > 100:
            raise LabError(f"{self.ctlsocket} is too long for a Unix socket path")

    @property
    def nss_database(self) -> str:
        return f"sql:{self.nss_dir}"

    def prepare(self) -> None:
        """Directories, an empty NSS database, and an ipsec.conf including ipsec.d/*.conf."""
        for directory in (self.ipsec_dir / "policies", self.nss_dir, self.run_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if not (self.nss_dir / "cert9.db").exists():
            subprocess.run(["certutil", "-N", "-d", self.nss_database, "--empty-password"],
                           check=True, capture_output=True, timeout=30)
        (self.dir / "ipsec.secrets").touch()
        self.config.write_text(
            "config setup\n"
            "    logfile=/dev/stderr\n"
            f"include {self.ipsec_dir}/*.conf\n"
        )

    def start(self, timeout: float = 10) -> None:
        self.prepare()
        self.host.spawn([PLUTO, "--config", str(self.config), "--nofork", "--stderrlog",
                         "--rundir", str(self.run_dir), "--nssdir", str(self.nss_dir),
                         "--ipsecdir", str(self.ipsec_dir),
                         "--secretsfile", str(self.dir / "ipsec.secrets")], str(self.log))
        deadline = time.monotonic() + timeout
        while not self.ctlsocket.exists():
            if time.monotonic() > deadline:
                tail = self.log_text()[-2000:]
                raise LabError(f"pluto in {self.host.name} did not start:\n{tail}")
            time.sleep(0.05)

    def use_null_oe(self, cidr: str) -> None:
        """Configure plain NULL-auth OE (private-or-clear) towards ``cidr``."""
        (self.ipsec_dir / "oe.conf").write_text(NULL_OE_CONF)
        (self.ipsec_dir / "policies" / "private-or-clear").write_text(f"{cidr}\n")
        (self.ipsec_dir / "policies" / "clear").write_text("")

    def whack(self, *args: str, check: bool = True) -> str:
        result = self.host.run(["ipsec", "whack", "--ctlsocket", str(self.ctlsocket), *args],
                               check=check)
        return result.stdout + result.stderr

    def load(self) -> str:
        """Load every conn of ipsec.conf and (re)read the policy groups."""
        out = self.host.run(["ipsec", "addconn", "--config", str(self.config),
                             "--ctlsocket", str(self.ctlsocket), "--autoall"]).stdout
        return out + self.whack("--listen")

    def initiate_oe(self, here: str, there: str) -> str:
        return self.whack("--oppohere", here, "--oppothere", there, check=False)

    def ike_sa_counts(self) -> dict[str, int]:
        """``IKE SAs: total(N), ..., authenticated(N), anonymous(N)`` from --briefstatus."""
        text = self.whack("--briefstatus")
        line = next((ln for ln in text.splitlines() if "IKE SAs:" in ln), "")
        return {k: int(v) for k, v in re.findall(r"(\w[\w-]*)\((\d+)\)", line)}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
