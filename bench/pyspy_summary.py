"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): where the samples go.

    .venv/bin/python bench/pyspy_summary.py PROFILE [--top 30]

Prints the share of samples spent in each function including what it calls (inclusive)
and in the function itself (self), line numbers dropped so a function counts once. With
``py-spy record --gil`` (as ``discovery.py --profile`` records) the samples are the Python
thread holding the GIL: where the interpreter's CPU goes.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

_LINE = re.compile(r" \((.*):\d+\)$")


def summarise(path: Path, top: int) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_LINE.sub(r" (\1)", f) for f in stack.split(";")
                  if not f.startswith(("thread (", "process "))]
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return f"{path}: no samples\n"
    lines = [f"{path}: {total} samples", "", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    sys.stdout.write(summarise(args.profile, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
