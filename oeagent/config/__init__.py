"""The configuration: TOML read with ``tomllib`` into typed, frozen objects.

Loading never stops at the first problem: every unknown key, wrong type, bad value and missing
file is collected with its key path and raised together as one ConfigError (exit 78), so an
operator fixes a config in one pass. Secrets are not in the TOML; see ``oeagent.secrets``.

Layout: ``model`` holds the dataclasses, ``reader`` the typed table access that collects
problems, ``sections`` one builder per table; this module is the entry point.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from oeagent.config import tamper
from oeagent.config.model import (
    BUILTIN_TRUST_ANCHORS,
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    KEY_ALGORITHMS,
    LETSENCRYPT_DIRECTORY,
    PUBLISH_BACKENDS,
    PUBLISH_MODES,
    TSIG_ALGORITHMS,
    AcmeConfig,
    ChallengeConfig,
    Config,
    DiscoveryConfig,
    DnsChallengeConfig,
    HooksConfig,
    HostConfig,
    HttpChallengeConfig,
    KeyConfig,
    NssConfig,
    PlutoConfig,
    PolicyConfig,
    PublishConfig,
    PublishDnsConfig,
    PublishWellKnownConfig,
    RenewalConfig,
    RolloverConfig,
    StaticPeer,
)
from oeagent.config.reader import _Reader
from oeagent.config.sections import _build
from oeagent.errors import ConfigError

MAX_CONFIG_BYTES = 16 * 2**20
"""Far above any real config (thousands of policy.peers lines are a few hundred KiB)."""


def config_path_from(cli_value: str | None) -> Path:
    """``--config`` wins, then ``$OEAGENT_CONFIG``, then the default path."""
    if cli_value is not None:
        if not cli_value.strip():
            # --config "$UNSET" must not quietly read the default (another host's config).
            raise ConfigError(["--config is empty; name the configuration file or leave the "
                               "option out"])
        return Path(cli_value)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load(path: Path) -> Config:
    """Read and validate the config at ``path``; raise ConfigError with every problem."""
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            # Bounded: /dev/zero or a FIFO that never ends would be read until memory ran out.
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([f"file not found: {path}"], path) from None
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror}"], path) from None
    exposed = tamper.exposure(path, info)
    if exposed is not None:
        # hooks.post_deploy runs as root: whoever can change this file owns the host (the
        # same rule as for the hook programs themselves).
        raise ConfigError([f"{exposed.what}; it names the commands oeagent runs as root: "
                           f"run {exposed.fix}"], path)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"larger than {MAX_CONFIG_BYTES // 2**20} MiB; is it the config?"],
                          path)
    if raw.startswith(b"\xef\xbb\xbf"):
        # tomllib reports only "Invalid statement (at line 1, column 1)" for it.
        raise ConfigError(["starts with a byte order mark (U+FEFF); save it as UTF-8 without "
                           "one"], path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"not valid UTF-8: line {line}, byte 0x{raw[exc.start]:02x}"],
                          path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], path) from None
    except RecursionError:
        # tomllib descends one Python frame per nesting level: a few hundred nested arrays
        # or inline tables exhaust the stack. No config of ours nests more than three deep.
        raise ConfigError(["not valid TOML: arrays or inline tables nested too deeply"],
                          path) from None
    return parse(data, base_dir=path.parent.resolve(), source=path)


def parse(data: dict[str, Any], base_dir: Path, source: Path | None = None) -> Config:
    """Build a Config from already-decoded TOML; relative paths are taken from ``base_dir``."""
    reader = _Reader(data, base_dir)
    config = _build(reader)
    reader.reject_unknown()
    if reader.problems or config is None:
        raise ConfigError(reader.problems, source)
    return Config(**{**config.__dict__, "source": source})



__all__ = [
    "BUILTIN_TRUST_ANCHORS",
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "KEY_ALGORITHMS",
    "LETSENCRYPT_DIRECTORY",
    "PUBLISH_BACKENDS",
    "PUBLISH_MODES",
    "TSIG_ALGORITHMS",
    "AcmeConfig",
    "ChallengeConfig",
    "Config",
    "DiscoveryConfig",
    "DnsChallengeConfig",
    "HooksConfig",
    "HostConfig",
    "HttpChallengeConfig",
    "KeyConfig",
    "NssConfig",
    "PlutoConfig",
    "PolicyConfig",
    "PublishConfig",
    "PublishDnsConfig",
    "PublishWellKnownConfig",
    "RenewalConfig",
    "RolloverConfig",
    "StaticPeer",
    "config_path_from",
    "load",
    "parse",
]
