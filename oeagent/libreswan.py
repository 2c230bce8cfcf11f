"""libreswan's programs (``whack``, ``addconn``), run directly instead of through ``ipsec``,
and what their output says.

``ipsec whack ...`` is a shell script that works out libreswan's directories and then execs
``<directory>/whack``. The shell is ~2.5 ms a call, most of what a call costs: a policy
load routes each on-demand conn with its own whack, so at 1,000 peers that was 3.4 of
the 4.1 ms a conn took (measured in a network namespace with pluto 4.10, 2026-12-04). The
directory is asked of ``ipsec --directory`` once per process; where that does not answer
with a directory holding the program, the wrapper is used as before.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from oeagent import proc
from oeagent.errors import OeagentError


@functools.cache
def _program_directory() -> Path | None:
    try:
        done = proc.run(["ipsec", "--directory"], check=False, timeout=10)
    except OeagentError:  # not installed, or hung: the wrapper's own error will say so
        return None
    text = done.stdout.strip()
    if done.returncode != 0 or not text.startswith("/"):
        return None
    return Path(text)


def command(program: str) -> list[str]:
    """The argv prefix that runs libreswan's ``program``, e.g. ``["/usr/libexec/ipsec/whack"]``
    or, failing that, ``["ipsec", "whack"]``."""
    directory = _program_directory()
    if directory is not None:
        path = directory / program
        if path.is_file() and os.access(path, os.X_OK):
            return [str(path)]
    return ["ipsec", program]


def whack(*args: str) -> list[str]:
    return [*command("whack"), *args]


def addconn(*args: str) -> list[str]:
    return [*command("addconn"), *args]


# whacks in flight in whack_each: a whack is mostly its own start-up (~1 ms of its ~1.2 ms
# at 10,000 conns), which runs beside pluto's work; 4 took routing 1,000 conns from 0.97 to
# 0.59 s on 2 CPUs, 8 gained little more. pluto itself handles one whack at a time.
WHACK_CONCURRENCY = 4


def whack_each(ctlsocket: Path | str, options: Sequence[str], names: Sequence[str],
               timeout: float = 60.0) -> str:
    """``whack OPTIONS --name NAME`` for each of ``names`` (pluto takes one conn a whack;
    ``addconn --autoall`` would route many in one run, but says nothing when pluto refuses
    one); what they said, in order. Once a whack fails (times out), no more are started."""
    failed = threading.Event()

    def one(name: str) -> str:
        if failed.is_set():
            return ""
        try:
            done = proc.run(whack("--ctlsocket", str(ctlsocket), *options, "--name", name),
                            check=False, timeout=timeout)
        except OeagentError:
            failed.set()
            raise
        return "\n" + (done.stdout + done.stderr).strip()

    if len(names) <= 1:
        return "".join(map(one, names))
    pool = ThreadPoolExecutor(WHACK_CONCURRENCY, thread_name_prefix="oeagent-whack")
    try:
        return "".join(pool.map(one, names))
    finally:
        pool.shutdown(cancel_futures=True)


_QUOTED = re.compile(r'"([^"\n]+)"')
_STATE = re.compile(r'^\d* ?#\d+: "([^"\[#]+)', re.MULTILINE)


def held_conns(status: str) -> set[str]:
    """Conn names in ``whack --status`` output: ``"NAME"``, ``"NAME"[1]``, ``"NAME#CIDR"``
    (group instances count for their group conn). One pass: at 10,000 conns the status is
    tens of megabytes, and a search per conn made a renewal's check quadratic."""
    return {quoted.split("#", 1)[0] for quoted in _QUOTED.findall(status)}


def conns_with_states(status: str) -> set[str]:
    """The conns (instances count for theirs) of which pluto holds an IKE or IPsec SA
    (``#N: "CONN"...`` lines of ``whack --status``)."""
    return set(_STATE.findall(status))
