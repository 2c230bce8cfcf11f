"""Free loopback ports and detached daemons: start, wait until ready, stop the whole group.

Daemons run in their own session (``start_new_session``) so ``python -m lab up`` can return
while they keep running; ``down`` (maybe from another process) finds them again from the PID
and the kernel start time recorded in lab.json, so a recycled PID is never killed by mistake.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class LabError(Exception):
    """The lab could not be started, queried or stopped; the message says why."""


def free_ports(count: int, address: str = "127.0.0.1") -> list[int]:
    """Ports on ``address`` free for both TCP and UDP at the time of the call.

    All sockets stay open until every port is chosen, so one call never returns a port twice.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(tcp)
            tcp.bind((address, 0))
            port = tcp.getsockname()[1]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            held.append(udp)
            try:
                udp.bind((address, port))
            except OSError:
                continue
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


@dataclass(frozen=True)
class Daemon:
    """A started daemon as recorded in lab.json."""

    name: str
    pid: int
    start_time: int
    log: Path

    def to_json(self) -> dict[str, object]:
        return {"pid": self.pid, "start_time": self.start_time, "log": str(self.log)}

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, object]) -> Daemon:
        pid, start_time = int(str(data["pid"])), int(str(data["start_time"]))
        return cls(name, pid, start_time, Path(str(data["log"])))


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def start_time_of(pid: int) -> int:
    stat = _stat(pid)
    if stat is None:
        raise LabError(f"process {pid} exited at once")
    return stat[1]


def is_running(daemon: Daemon) -> bool:
    stat = _stat(daemon.pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[1] == daemon.start_time


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) if tail else "    (log is empty)"


def spawn(
    name: str,
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    append: bool = False,
) -> tuple[Daemon, subprocess.Popen[bytes]]:
    """Start ``argv`` in a new session with stdout and stderr written (or appended) to ``log``."""
    with log.open("ab" if append else "wb") as out:
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise LabError(f"cannot start {name} ({argv[0]}): {exc}") from exc
    try:
        started = start_time_of(popen.pid)
    except LabError:
        popen.wait()
        raise LabError(
            f"{name} exited at once (status {popen.returncode}); end of {log}:\n{log_tail(log)}"
        ) from None
    return Daemon(name, popen.pid, started, log), popen


def wait_ready(
    daemon: Daemon,
    probe: Callable[[], bool],
    timeout: float,
    what: str,
) -> None:
    """Poll ``probe`` until it returns True; raise with the daemon's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if not is_running(daemon):
            raise LabError(f"{daemon.name} exited before {what}; end of {daemon.log}:\n"
                           f"{log_tail(daemon.log)}")
        with contextlib.suppress(Exception):
            if probe():
                return
        if time.monotonic() > deadline:
            raise LabError(f"{daemon.name}: no {what} after {timeout:g} s; end of {daemon.log}:\n"
                           f"{log_tail(daemon.log)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def stop(daemon: Daemon, popen: subprocess.Popen[bytes] | None = None, timeout: float = 5) -> None:
    """SIGTERM the daemon's process group, SIGKILL it after ``timeout``; wait until it is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if is_running(daemon):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(daemon.pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if popen is not None and popen.poll() is not None:
                break
            if popen is None and not is_running(daemon):
                break
            time.sleep(0.02)
        else:
            continue
        break
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout)
    if is_running(daemon):
        raise LabError(f"{daemon.name} (pid {daemon.pid}) did not stop")
