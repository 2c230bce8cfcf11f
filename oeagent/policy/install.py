"""Validate, install and load rendered policy files; put the old ones back if pluto refuses.

``ipsec addconn --checkconfig`` exits 0 on many bad values and only prints them, so any
output on stderr is a failure. pluto itself is the final judge: if loading the new conns
logs a failure, the previous files are restored and loaded again.
"""

from __future__ import annotations

import difflib
import logging
import re
import stat
import tempfile
from pathlib import Path

from oeagent import fsio, proc
from oeagent.errors import OeagentError
from oeagent.policy.render import CONF, conn_names

log = logging.getLogger(__name__)

_PLUTO_REFUSED = re.compile(r"failed to add|ERROR|error|not added|cannot", re.IGNORECASE)


class PolicyError(OeagentError):
    """The generated policy was refused (by oeagent's checks, addconn or pluto)."""


def read_current(ipsec_dir: Path, names: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = (ipsec_dir / name).read_text("utf-8")
        except FileNotFoundError:
            out[name] = None
    return out


def diff(old: dict[str, str | None], new: dict[str, str]) -> str:
    chunks: list[str] = []
    for name in sorted(new):
        before = (old.get(name) or "").splitlines(keepends=True)
        after = new[name].splitlines(keepends=True)
        chunks += difflib.unified_diff(before, after, f"a/{name}", f"b/{name}")
    return "".join(chunks)


def _wrapper(directory: Path, conf: Path) -> Path:
    wrapper = directory / "ipsec.conf"
    wrapper.write_text(f"config setup\ninclude {conf}\n")
    return wrapper


def checkconfig(files: dict[str, str]) -> None:
    """Run ``ipsec addconn --checkconfig`` on the candidate oeagent.conf; stderr = failure."""
    with tempfile.TemporaryDirectory(prefix="oeagent-policy-") as tmp:
        conf = Path(tmp) / CONF
        conf.write_text(files[CONF])
        result = proc.run(["ipsec", "addconn", "--checkconfig", "--config",
                           str(_wrapper(Path(tmp), conf))], check=False)
    complaint = (result.stderr.strip() or "").replace(str(conf), CONF)
    if result.returncode != 0 or complaint:
        detail = complaint or result.stdout.strip() or f"exit status {result.returncode}"
        raise PolicyError(f"ipsec addconn --checkconfig rejected the policy: {detail}")


def write_files(ipsec_dir: Path, files: dict[str, str | None]) -> None:
    """Write each file atomically (None removes it); group files before the conns using them."""
    for name in sorted(files, key=lambda n: n == CONF):
        path = ipsec_dir / name
        content = files[name]
        if content is None:
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fsio.atomic_write(path, content.encode("utf-8"), fsio.PUBLIC_FILE)


def pluto_running(ctlsocket: Path) -> bool:
    try:
        return stat.S_ISSOCK(ctlsocket.stat().st_mode)
    except FileNotFoundError:
        return False


def load(ctlsocket: Path, ipsec_dir: Path, old_conf: str | None, new_conf: str | None) -> str:
    """Replace oeagent's conns in a running pluto and reread the groups; return pluto's words.

    Raises PolicyError with pluto's complaint when a conn does not load.
    """
    sock = str(ctlsocket)
    for name in dict.fromkeys([*conn_names(old_conf), *conn_names(new_conf)]):
        proc.run(["ipsec", "whack", "--ctlsocket", sock, "--delete", "--name", name],
                 check=False)
    output = ""
    if new_conf is not None:
        with tempfile.TemporaryDirectory(prefix="oeagent-load-") as tmp:
            added = proc.run(["ipsec", "addconn", "--ctlsocket", sock, "--config",
                              str(_wrapper(Path(tmp), ipsec_dir / CONF)), "--autoall"],
                             check=False, timeout=60)
        output = (added.stdout + added.stderr).strip()
        if added.returncode != 0 or _PLUTO_REFUSED.search(output):
            raise PolicyError(f"pluto refused the policy: {_last_lines(output)}")
    listen = proc.run(["ipsec", "whack", "--ctlsocket", sock, "--listen"], check=False)
    if listen.returncode != 0:
        raise PolicyError(f"pluto could not reread the groups: {_last_lines(listen.stderr)}")
    # addconn exits 0 even when pluto refuses a conn; ask pluto what it actually holds.
    status = proc.run(["ipsec", "whack", "--ctlsocket", sock, "--status"], check=False,
                      timeout=60).stdout
    missing = [n for n in conn_names(new_conf) if f'"{n}"' not in status]
    if missing:
        raise PolicyError(f"pluto did not load {', '.join(missing)}: {_last_lines(output)}")
    return output


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:]) if lines else "no output"
