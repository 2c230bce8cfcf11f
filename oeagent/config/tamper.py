"""Whether someone other than root could change a file that decides what oeagent runs as root.

The config names hook programs and the places oeagent writes; a hook program runs as root
after every deploy. Whoever can change either owns the host, in one of three ways: writing
the file (its mode), owning it (``chmod`` it first), or replacing it through a directory on
its path they can write (rename a new file over it). The last is refused for directories
others can write without the sticky bit; directories only a group can write are let through,
because Debian's user private groups (umask 002) make every checkout group-writable by a
group that holds its owner alone, and who owns each directory on the path is not checked for
the same reason (``sudo make demo`` from a user's checkout). OpenSSH's StrictModes is the
model; it is stricter on both counts.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path
from typing import NamedTuple


class Exposure(NamedTuple):
    """What lets another user change a file (``what``), and the command that stops it."""

    what: str
    fix: str


def exposure(path: Path, info: os.stat_result | None = None) -> Exposure | None:
    """How a user other than root or us could change what ``path`` holds, or None.

    ``info``: the file's status when the caller has it from the handle it read through
    (then that very file is judged). Only a regular file is judged (a FIFO or /dev/stdin
    given as the config is the caller's own choice); one that cannot be looked at is the
    caller's to report.
    """
    if info is None:
        try:
            info = os.stat(path)
        except OSError:
            return None
    if not stat.S_ISREG(info.st_mode):
        return None
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        return Exposure(f"writable by group or others (mode {mode:04o})", f"chmod go-w {path}")
    if info.st_uid not in (0, os.geteuid()):
        return Exposure(f"owned by {_user(info.st_uid)} instead of root", f"chown root {path}")
    for directory in _directories_on_the_way(path):
        try:
            dir_mode = os.stat(directory).st_mode
        except OSError:
            continue
        if dir_mode & stat.S_IWOTH and not dir_mode & stat.S_ISVTX:
            return Exposure(f"in a directory others can write ({directory}, mode "
                            f"{stat.S_IMODE(dir_mode):04o}, no sticky bit)",
                            f"chmod o-w {directory}")
    return None


def _directories_on_the_way(path: Path) -> list[Path]:
    """Every directory that leads to ``path``: as written, and after its symbolic links.

    A link on the way can be swapped by whoever can write the directory holding it, and the
    directory holding the file it leads to is a second way in; nearest first, each once.
    """
    absolute = Path(os.path.abspath(path))
    resolved = Path(os.path.realpath(path))
    seen: dict[Path, None] = {}
    for start in (absolute, resolved):
        for directory in start.parents:
            seen.setdefault(directory)
    return list(seen)


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"
