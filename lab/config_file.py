"""The lab's ready-to-use oeagent.toml, rendered with comments and optional overrides.

``render(settings, overrides)`` takes the lab's settings as a nested dict (tables in order) and
overrides either nested (``{"challenge": {"type": "dns-01"}}``) or dotted
(``{"challenge.type": "dns-01"}``); an override of None removes the key.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Table = dict[str, Any]

_COMMENTS = {
    "": "oeagent configuration for the local test lab (written by `python -m lab up`).\n"
    "Everything oeagent writes with it lands inside the lab directory.",
    "state_dir": "Account key, certificate keys, renewal state.",
    "host": "The certificate's identities; every *.oe.test name resolves to 127.0.0.1.",
    "acme": "Pebble, the lab's ACME CA. Its HTTPS listener uses a lab CA (ca_bundle); the\n"
    "roots it issues from are new on every Pebble start (see nss.trust_anchors).",
    "challenge": "http-01 by default; set type = \"dns-01\" to publish TXT records in BIND.",
    "challenge.http": "Pebble connects to port `port` of 127.0.0.1 for every http-01 check.\n"
    "standalone: oeagent listens there itself; webroot: a web server serves `webroot` there.",
    "challenge.dns": "RFC 2136 updates to the lab's BIND, signed with the lab's TSIG key.",
    "nss": "A private NSS database; trust_anchors is Pebble's current root.",
    "pluto": "No pluto runs in the lab by default: these paths stay inside the lab directory.",
    "publish": "Advertising: off until backends are listed (rfc2136, zonefile, wellknown).\n"
    "Verification asks the lab's validating unbound; the document is checked over HTTPS\n"
    "on the port where the lab's nginx (or `oeagent serve`) listens.",
}


def _set(tree: Table, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted!r}: {part!r} is not a table")
    if value is None:
        node.pop(parts[-1], None)
    elif isinstance(value, Mapping):
        for key, sub in value.items():
            _set(tree, f"{dotted}.{key}", sub)
    else:
        node[parts[-1]] = value


def apply_overrides(settings: Table, overrides: Mapping[str, Any] | None) -> Table:
    tree = copy.deepcopy(settings)
    for key, value in (overrides or {}).items():
        _set(tree, key, value)
    return tree


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        # A JSON string is a valid TOML basic string.
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _comment(path: str) -> list[str]:
    text = _COMMENTS.get(path)
    return [f"# {line}" if line else "#" for line in text.splitlines()] if text else []


def _table(lines: list[str], path: str, table: Table) -> None:
    subtables = []
    for key, value in table.items():
        if isinstance(value, dict):
            subtables.append((key, value))
            continue
        key_path = f"{path}.{key}" if path else key
        lines.extend(_comment(key_path))
        lines.append(f"{key} = {_value(value)}")
    for key, value in subtables:
        sub_path = f"{path}.{key}" if path else key
        lines.append("")
        lines.extend(_comment(sub_path))
        lines.append(f"[{sub_path}]")
        _table(lines, sub_path, value)


def render(settings: Table, overrides: Mapping[str, Any] | None = None) -> str:
    lines = _comment("")
    lines.append("")
    _table(lines, "", apply_overrides(settings, overrides))
    return "\n".join(lines) + "\n"


def lab_settings(
    *,
    root: Path,
    acme_directory: str,
    ca_bundle: Path,
    trust_anchors: Path,
    http_port: int,
    bind_port: int,
    tsig_key_name: str,
    tsig_algorithm: str,
    tsig_secret_file: Path,
    address: str = "127.0.0.1",
    unbound_port: int = 53,
    https_port: int = 443,
    eab_kid: str | None = None,
    eab_key_file: Path | None = None,
) -> Table:
    """The lab config; ``root`` holds everything oeagent writes (state, NSS, webroot, pluto).
    With ``eab_kid`` and ``eab_key_file`` (a lab whose Pebble requires External Account
    Binding) the acme table binds new accounts with them."""
    eab = ({"eab_kid": eab_kid, "eab_hmac_key_file": str(eab_key_file)}
           if eab_kid and eab_key_file else {})
    return {
        "state_dir": str(root / "state"),
        "lock_timeout": 10,
        "host": {"names": ["server.oe.test"]},
        "acme": {
            "directory": acme_directory,
            "agree_tos": True,
            "email": "hostmaster@oe.test",
            "ca_bundle": str(ca_bundle),
            "network_timeout": 10,
            "order_timeout": 30,
            **eab,
        },
        "challenge": {
            "type": "http-01",
            "http": {
                "mode": "standalone",
                "listen_address": address,
                "port": http_port,
                "webroot": str(root / "webroot"),
            },
            "dns": {
                "server": address,
                "port": bind_port,
                "zone": "oe.test",
                "tsig_key_name": tsig_key_name,
                "tsig_algorithm": tsig_algorithm,
                "tsig_secret_file": str(tsig_secret_file),
                "ttl": 5,
                "propagation_timeout": 10,
            },
        },
        "nss": {
            "database": f"sql:{root / 'nss'}",
            "nickname": "oeagent",
            "trust_anchors": str(trust_anchors),
        },
        "pluto": {
            "ctlsocket": str(root / "pluto" / "run" / "pluto.ctl"),
            "ipsec_dir": str(root / "ipsec.d"),
            "config": str(root / "pluto" / "ipsec.conf"),
        },
        "publish": {
            "backends": [],
            "max_age": 300,
            "resolver": "127.0.0.1",
            "resolver_port": unbound_port,
            "verify_timeout": 15,
            "zonefile": str(root / "oe-records.zone"),
            "dns": {"ttl": 5},
            "wellknown": {
                "mode": "webroot",
                "webroot": str(root / "www"),
                "listen_address": "127.0.0.1",
                "port": https_port,
                "ca_bundle": str(trust_anchors),
            },
        },
    }
