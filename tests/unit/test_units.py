"""install-units' rendering (no systemd needed): credentials for every secret the config names."""

from __future__ import annotations

from pathlib import Path

import pytest

from oeagent import config
from oeagent.errors import OeagentError
from oeagent.units import render

SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=\n"


def _config(tmp_path: Path, extra: str) -> tuple[config.Config, Path]:
    for name in ("tsig.key", "publish-tsig.key"):
        secret = tmp_path / name
        secret.write_text(SECRET)
        secret.chmod(0o600)
    path = tmp_path / "oeagent.toml"
    path.write_text('[host]\nnames = ["a.example"]\n'
                    '[challenge.dns]\ntsig_secret_file = "tsig.key"\n' + extra)
    return config.load(path), path


def _credentials(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("LoadCredential=")]


def test_the_publish_tsig_key_gets_its_own_credential(tmp_path: Path) -> None:
    # README: a LoadCredential= line for each secret file the config names.
    cfg, path = _config(tmp_path, '[publish]\nbackends = ["rfc2136"]\n'
                                  '[publish.dns]\ntsig_secret_file = "publish-tsig.key"\n')
    for unit in ("oeagent.service", "oeagent-renew.service"):
        assert _credentials(render(unit, cfg, path, "/opt/oeagent/bin/oeagent")) == [
            f"LoadCredential=tsig.key:{tmp_path / 'tsig.key'}",
            f"LoadCredential=publish-tsig.key:{tmp_path / 'publish-tsig.key'}",
        ]
    assert _credentials(render("oeagent-renew.timer", cfg, path, "/usr/bin/oeagent")) == []


def test_a_secret_shared_by_challenge_and_publish_is_loaded_once(tmp_path: Path) -> None:
    cfg, path = _config(tmp_path, '[publish]\nbackends = ["rfc2136"]\n')
    assert cfg.publish.dns.tsig_secret is cfg.challenge.dns.tsig_secret
    assert _credentials(render("oeagent.service", cfg, path, "/usr/bin/oeagent")) == [
        f"LoadCredential=tsig.key:{tmp_path / 'tsig.key'}",
    ]


def test_two_secret_files_with_one_name_are_refused(tmp_path: Path) -> None:
    (tmp_path / "eab").mkdir()
    eab = tmp_path / "eab" / "tsig.key"
    eab.write_text(SECRET)
    eab.chmod(0o600)
    cfg, path = _config(tmp_path, '[acme]\neab_kid = "kid"\neab_hmac_key_file = "eab/tsig.key"\n')
    with pytest.raises(OeagentError, match=r"two secret files share the name 'tsig\.key'"):
        render("oeagent.service", cfg, path, "/usr/bin/oeagent")
