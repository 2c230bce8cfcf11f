"""Post-deploy hooks: commands from config run after a certificate is deployed.

Each hook is an argument list run through ``oeagent.proc`` (no shell, minimal environment)
with variables describing the new certificate. A failing hook is reported and makes the run
exit non-zero, but never undoes the deployed certificate: it is good, something downstream
is not, and that is what the operator must hear about (certbot #8528 exits 0 here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from oeagent import proc
from oeagent.certstore import StoredCertificate
from oeagent.config import Config
from oeagent.errors import OeagentError
from oeagent.keys import spki_sha256
from oeagent.report import Reporter
from oeagent.state import StateDir


@dataclass(frozen=True)
class HookResult:
    argv: tuple[str, ...]
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class HookError(OeagentError):
    """One or more post-deploy hooks failed; the certificate stays deployed."""

    def __init__(self, message: str, result: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.result = result


def hook_environment(config: Config, state: StateDir, cert: StoredCertificate, event: str,
                     previous_serial: str | None) -> dict[str, str]:
    directory = state.cert_dir(cert.serial_hex)
    return {
        "OEAGENT_EVENT": event,
        "OEAGENT_CERT_SERIAL": cert.serial_hex,
        "OEAGENT_CERT_NOT_BEFORE": cert.not_before.isoformat(),
        "OEAGENT_CERT_NOT_AFTER": cert.not_after.isoformat(),
        "OEAGENT_CERT_NAMES": " ".join(cert.dns_names()),
        "OEAGENT_CERT_ADDRESSES": " ".join(cert.ip_addresses()),
        "OEAGENT_CERT_SHA256": cert.fingerprint_sha256,
        "OEAGENT_CERT_SPKI_SHA256": spki_sha256(cert.cert),
        "OEAGENT_CERT_PATH": str(directory / "cert.pem"),
        "OEAGENT_CHAIN_PATH": str(directory / "chain.pem"),
        "OEAGENT_FULLCHAIN_PATH": str(directory / "fullchain.pem"),
        "OEAGENT_NSS_DATABASE": config.nss.database,
        "OEAGENT_NSS_NICKNAME": config.nss.nickname,
        "OEAGENT_PREVIOUS_SERIAL": previous_serial or "",
    }


def run_post_deploy(config: Config, state: StateDir, cert: StoredCertificate, event: str,
                    previous_serial: str | None, reporter: Reporter) -> list[HookResult]:
    """Run every hook in order (one failing does not skip the others)."""
    results = []
    env = hook_environment(config, state, cert, event, previous_serial)
    for argv in config.hooks.post_deploy:
        try:
            done = proc.run(argv, check=False, timeout=config.hooks.timeout, env=env)
        except OeagentError as exc:  # not found, not runnable, timed out
            results.append(HookResult(argv, False, str(exc)))
        else:
            output = (done.stderr or done.stdout).strip().splitlines()
            last = output[-1][:200] if output else "no output"
            ok = done.returncode == 0
            detail = "exit 0" if ok else f"exit status {done.returncode}: {last}"
            results.append(HookResult(argv, ok, detail))
        result = results[-1]
        reporter.step("hook", f"post-deploy hook {argv[0]}: "
                      f"{'ok' if result.ok else 'FAILED, ' + result.detail}",
                      argv=list(argv), ok=result.ok,
                      **({} if result.ok else {"level": "error"}))
    return results
