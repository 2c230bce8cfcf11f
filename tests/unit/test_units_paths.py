"""``install-units`` writes paths into ExecStart=, ReadWritePaths= and LoadCredential=, where
systemd gives some characters a meaning of their own: such a path is refused, never written."""

from __future__ import annotations

from pathlib import Path

import pytest

from oeagent import config
from oeagent.errors import OeagentError
from oeagent.units import render


@pytest.mark.parametrize("name", ["odd name.toml", "a%h.toml", 'a".toml', "a$HOME.toml",
                                  "a${HOME}.toml", "a\\x20.toml", "a'b.toml"])
def test_a_config_path_systemd_would_rewrite_is_refused(tmp_path: Path, name: str) -> None:
    # systemd expands $VAR and ${VAR} and unescapes backslashes in ExecStart=: the unit would
    # have run oeagent with another config than the one installed from.
    path = tmp_path / name
    path.write_text('host.names = ["a.example.org"]\n')
    cfg = config.load(path)
    with pytest.raises(OeagentError, match="unusual path"):
        render("oeagent.service", cfg, path, "/usr/bin/oeagent")


def test_a_plain_path_is_written(tmp_path: Path) -> None:
    path = tmp_path / "oeagent-1.toml"
    path.write_text('host.names = ["a.example.org"]\n')
    text = render("oeagent.service", config.load(path), path, "/usr/bin/oeagent")
    assert f"/usr/bin/oeagent --config {path}" in text


def test_temp_files_of_a_killed_install_are_removed_and_nothing_else(tmp_path: Path) -> None:
    from oeagent.report import Reporter
    from oeagent.units import install_units

    path = tmp_path / "oeagent.toml"
    path.write_text('host.names = ["a.example.org"]\n')
    units = tmp_path / "system"
    units.mkdir()
    # What fsio.atomic_write leaves when killed between mkstemp and the rename, and files of
    # others that look alike.
    ours = [units / ".oeagent.service.k3j2_x.tmp", units / ".oeagent-renew.timer.a1.tmp"]
    theirs = [units / ".nginx.service.k3j2_x.tmp", units / ".oeagent.service.bak",
              units / "oeagent-other.service"]
    for file in (*ours, *theirs):
        file.write_text("x")
    reporter = Reporter(as_json=True)
    done = install_units(config.load(path), path, str(units), reporter, exe="/usr/bin/oeagent")
    assert sorted(p.name for p in units.iterdir()) == sorted(
        [f.name for f in theirs] + ["oeagent.service", "oeagent-renew.service",
                                    "oeagent-renew.timer"])
    assert len(done["written"]) == 3  # type: ignore[arg-type]
    recovered = [s.message for s in reporter.steps if s.name == "recover"]
    assert len(recovered) == 2 and all("interrupted install-units" in m for m in recovered)
