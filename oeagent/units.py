"""``oeagent install-units``: the shipped systemd units, fitted to this host's configuration.

The templates in ``oeagent/data/systemd/`` (also ``systemd/`` at the top of the repository)
name the default paths. Installing replaces them with this oeagent's executable, this config
file, and ``ReadWritePaths=`` for exactly this config's state, NSS and ipsec directories; each
secret named in the config becomes a ``LoadCredential=`` line, so the service can read it
from ``$CREDENTIALS_DIRECTORY`` under ``ProtectSystem=strict``.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from importlib import resources
from pathlib import Path

from oeagent.config import Config
from oeagent.errors import OeagentError
from oeagent.fsio import PUBLIC_FILE, atomic_write_text
from oeagent.report import Reporter

UNITS = ("oeagent.service", "oeagent-renew.service", "oeagent-renew.timer")
DEFAULT_EXEC = "/usr/bin/oeagent"
DEFAULT_CONFIG = "/etc/oeagent/oeagent.toml"
DEFAULT_STATE = Path("/var/lib/oeagent")


def template(name: str) -> str:
    return resources.files("oeagent").joinpath("data", "systemd", name).read_text("utf-8")


def executable() -> str:
    """This oeagent's entry point (the venv's script when run from one)."""
    found = shutil.which("oeagent")
    candidate = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if candidate is not None and candidate.name == "oeagent" and candidate.is_file():
        return str(candidate)
    if found:
        return str(Path(found).resolve())
    raise OeagentError("cannot find the oeagent executable on PATH to write into the units")


def _quote(path: Path | str) -> str:
    # systemd gives these a meaning in unit files: whitespace splits words, quotes group
    # them, '%' is a specifier, '$' expands a variable and '\\' starts an escape in
    # ExecStart=. Escaping each correctly per setting is more than any sane path needs.
    text = str(path)
    if any(c.isspace() or c in "\"'%$\\" for c in text):
        raise OeagentError(f"refusing to write a unit with an unusual path: {text!r}")
    return text


def render(name: str, config: Config, config_path: Path, exe: str) -> str:
    text = template(name)
    text = text.replace(f"{DEFAULT_EXEC} --config {DEFAULT_CONFIG}",
                        f"{_quote(exe)} --config {_quote(config_path.resolve())}")
    writable = [config.state_dir, config.nss.directory, config.pluto.ipsec_dir]
    text = text.replace("ReadWritePaths=/var/lib/oeagent /var/lib/ipsec/nss /etc/ipsec.d",
                        "ReadWritePaths=" + " ".join(_quote(p) for p in writable))
    if config.state_dir != DEFAULT_STATE:
        # StateDirectory= only manages /var/lib/<name>; another state_dir is the admin's.
        text = "\n".join(line for line in text.splitlines()
                         if not line.startswith("StateDirectory")) + "\n"
    credentials = "".join(f"LoadCredential={name}:{_quote(source)}\n"
                          for name, source in _credentials(config).items())
    lines = [line for line in text.splitlines(keepends=True)
             if not line.startswith("#LoadCredential=")]
    text = "".join(lines)
    if credentials and "[Service]\n" in text:
        text = text.replace("UMask=0077\n", f"UMask=0077\n{credentials}")
    return text


def _credentials(config: Config) -> dict[str, Path]:
    """Every secret file the config names, by credential name. [publish.dns] inherits
    [challenge.dns]'s key unless it names its own, so the same file is listed once."""
    secrets = (config.acme.eab_hmac_key, config.challenge.dns.tsig_secret,
               config.publish.dns.tsig_secret)
    found: dict[str, Path] = {}
    for secret in secrets:
        if secret is None:
            continue
        known = found.setdefault(secret.source.name, secret.source)
        if known != secret.source:
            # Both would be looked up as $CREDENTIALS_DIRECTORY/NAME: one would shadow the other.
            raise OeagentError(f"two secret files share the name {secret.source.name!r} "
                               f"({known} and {secret.source}); rename one")
    return found


def install_units(config: Config, config_path: Path, directory: str, reporter: Reporter,
                  *, dry_run: bool = False, exe: str | None = None) -> dict[str, object]:
    target = Path(directory)
    exe = exe or executable()
    written = []
    if not dry_run:
        for stale in _stale_temp_files(target):
            reporter.step("recover", f"removed {stale}, left by an interrupted install-units")
    for name in UNITS:
        text = render(name, config, config_path, exe)
        if dry_run:
            reporter.step("unit", f"would write {target / name}", text=text)
            continue
        try:
            target.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target / name, text, PUBLIC_FILE)
        except OSError as exc:
            raise OeagentError(f"cannot write {target / name}: {exc.strerror or exc}") from None
        written.append(str(target / name))
        reporter.step("unit", f"wrote {target / name}")
    reporter.step("next", "then either the agent: systemctl daemon-reload && "
                  "systemctl enable --now oeagent.service")
    reporter.step("next", "or the timer: systemctl daemon-reload && "
                  "systemctl enable --now oeagent-renew.timer")
    return {"directory": str(target), "written": written, "dry_run": dry_run}


def _stale_temp_files(directory: Path) -> list[Path]:
    """Temp files of our own units (``.oeagent.service.XXXX.tmp``, from ``fsio.atomic_write``)
    that a killed install-units left in the unit directory; nothing else is touched."""
    removed = []
    for name in UNITS:
        for path in directory.glob(f".{name}.*.tmp") if directory.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed
