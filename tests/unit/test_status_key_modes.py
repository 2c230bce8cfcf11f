"""``status`` says when a private key in the state directory is readable by group or others
(restored from a backup, copied by hand): oeagent never loosens a mode, but a key that
leaked to other local users is no longer a secret, and nothing else would say so."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from oeagent import certstore, config, keys
from oeagent.state import StateDir
from oeagent.status import collect
from tests.unit.test_keys_renewal import make_cert

NOW = dt.datetime.now(dt.UTC)


def enrolled(tmp_path: Path) -> config.Config:
    cfg = config.parse({"state_dir": str(tmp_path / "state"),
                        "host": {"names": ["a.example.org"]},
                        "nss": {"database": f"sql:{tmp_path / 'nss'}"},
                        "pluto": {"ctlsocket": str(tmp_path / "pluto.ctl")}}, tmp_path)
    state = StateDir(cfg.state_dir)
    state.ensure()
    key = keys.generate_key("ecdsa-p256")
    state.write_bytes(state.cert_key_path, keys.key_to_pem(key))
    certstore.save(state, make_cert(key, ["a.example.org"], NOW - dt.timedelta(days=1),
                                    dt.timedelta(days=90)), ())
    account_key = state.account_dir(cfg.acme.directory) / "key.pem"
    state.write_bytes(account_key, keys.key_to_pem(keys.generate_key("ecdsa-p256")))
    return cfg


def key_warnings(report: dict[str, object]) -> list[str]:
    return [a for a in report["attention"] if "readable by group or others" in a]  # type: ignore[attr-defined]


def test_private_keys_with_loose_modes_need_attention(tmp_path: Path) -> None:
    cfg = enrolled(tmp_path)
    state = StateDir(cfg.state_dir)
    assert key_warnings(collect(cfg)) == []
    state.cert_key_path.chmod(0o644)
    (state.account_dir(cfg.acme.directory) / "key.pem").chmod(0o640)
    warnings = key_warnings(collect(cfg))
    assert len(warnings) == 2, warnings
    assert any(str(state.cert_key_path) in w and "0644" in w and "chmod 600" in w
               for w in warnings), warnings
