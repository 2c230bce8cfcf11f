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
