"""Validate, install and load rendered policy files; put the old ones back if pluto refuses.

``ipsec addconn --checkconfig`` exits 0 on many bad values and only prints them, so any
output on stderr is a failure. pluto itself is the final judge: if loading the new conns
logs a failure, the previous files are restored and loaded again.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
import tempfile
from pathlib import Path

from oeagent import fsio, libreswan, proc
from oeagent.errors import OeagentError
from oeagent.policy.render import CONF, conn_blocks

log = logging.getLogger(__name__)

_PLUTO_REFUSED = re.compile(r"failed to add|ERROR|error|not added|cannot", re.IGNORECASE)


class PolicyError(OeagentError):
    """The generated policy was refused (by oeagent's checks, addconn or pluto)."""


def read_current(ipsec_dir: Path, names: list[str]) -> dict[str, str | None]:
    """The installed files (None: absent). Anything else that stops reading one is a
    PolicyError before anything changes: a file we cannot read we could not restore."""
    out: dict[str, str | None] = {}
    for name in names:
        path = ipsec_dir / name
        try:
            out[name] = path.read_text("utf-8")
        except FileNotFoundError:
            out[name] = None
        except NotADirectoryError:
            raise PolicyError(f"cannot read {path}: {ipsec_dir} (pluto.ipsec_dir) or a "
                              "directory in it is not a directory") from None
        except OSError as exc:
            raise PolicyError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise PolicyError(f"{path} is not UTF-8 (byte {exc.start}); oeagent writes it, "
                              "so move the hand-edited file aside") from None
    return out


def diff(old: dict[str, str | None], new: dict[str, str | None]) -> str:
    chunks: list[str] = []
    for name in sorted(new):
        before = (old.get(name) or "").splitlines(keepends=True)
        after = (new[name] or "").splitlines(keepends=True)
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
        result = proc.run(libreswan.addconn("--checkconfig", "--config",
                           str(_wrapper(Path(tmp), conf))), check=False)
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


def remove_stale_temp_files(ipsec_dir: Path) -> list[Path]:
    """oeagent's own temp files (``.oeagent*.tmp``, from ``fsio.atomic_write``) that a killed
    run left in the ipsec directory; libreswan's files are never touched."""
    removed = []
    for directory in (ipsec_dir, ipsec_dir / "policies"):
        for path in directory.glob(".oeagent*.tmp") if directory.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def load(ctlsocket: Path, ipsec_dir: Path, old_conf: str | None, new_conf: str | None) -> str:
    """Bring a running pluto to ``new_conf``: replace only the conns that changed (or that
    pluto does not hold), so SAs of unchanged peers survive; reread the groups; then check
    that pluto holds every conn. Raises PolicyError with pluto's words when it does not."""
    sock = str(ctlsocket)
    old, new = conn_blocks(old_conf), conn_blocks(new_conf)
    removed = [n for n in old if n not in new]
    held = _loaded(sock, [*new, *removed])
    changed = [n for n in new if old.get(n) != new[n] or n not in held]
    # A changed conn is not deleted first: addconn replaces it (its whack message deletes
    # and adds in one), so it is never without its definition. Removed ones are deleted
    # only when pluto holds them: with thousands of new peers, one whack per name pluto
    # never had was most of the load time.
    libreswan.whack_each(sock, ["--delete"], [n for n in removed if n in held])
    output = ""
    if changed:
        with tempfile.TemporaryDirectory(prefix="oeagent-load-") as tmp:
            added = proc.run(libreswan.addconn("--ctlsocket", sock, "--config",
                              str(_wrapper(Path(tmp), ipsec_dir / CONF)), *changed),
                             check=False, timeout=max(60, len(changed) // 10))
        output = (added.stdout + added.stderr).strip()
        if added.returncode != 0 or _PLUTO_REFUSED.search(output):
            detail = _last_lines(output) if output else (
                f"ipsec addconn exited {added.returncode}; pluto's log says why")
            raise PolicyError(f"pluto refused {', '.join(changed)}: {detail}")
        # addconn NAME adds (or replaces) but does not route: on-demand conns need their
        # trap (kernel policy) routed. Until then an enforce peer's traffic meets the
        # oeagent-enforced drop, not NULL OE.
        output += libreswan.whack_each(
            sock, ["--route"], [n for n in changed if "auto=ondemand" in new[n].splitlines()])
    listen = proc.run(libreswan.whack("--ctlsocket", sock, "--listen"), check=False)
    if listen.returncode != 0:
        raise PolicyError(f"pluto could not reread the groups: {_last_lines(listen.stderr)}")
    # addconn exits 0 even when pluto refuses a conn; ask pluto what it actually holds
    # (once: asking per conn made a load of N peers cost N status dumps of N conns).
    loaded = _loaded(sock, list(new))
    missing = [n for n in new if n not in loaded]
    if missing:
        raise PolicyError(f"pluto did not load {', '.join(missing)}: {_last_lines(output)}")
    return output


def missing(ctlsocket: Path, names: list[str]) -> list[str]:
    """Which of the conns ``names`` a running pluto does not hold (one ``whack --status``)."""
    held = _loaded(str(ctlsocket), names)
    return [n for n in names if n not in held]


def _loaded(sock: str, names: list[str]) -> set[str]:
    """Which of ``names`` pluto holds (``whack --status``, asked once)."""
    if not names:
        return set()
    status = proc.run(libreswan.whack("--ctlsocket", sock, "--status"), check=False,
                      timeout=60).stdout
    return libreswan.held_conns(status) & set(names)


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:]) if lines else "no output"
