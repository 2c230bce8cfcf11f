"""The lab: Pebble, BIND and unbound on free loopback ports under one directory.

Everything a lab needs or writes lives in its directory; ``lab.json`` there records the ports,
paths and daemon PIDs, so ``down`` and ``status`` work from another process and two labs in
two directories never collide.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.tsig
import dns.tsigkeyring
import dns.update

from lab import bind, config_file, nginx, pebble, tlsca, unbound
from lab.netns import in_namespace
from lab.procs import Daemon, LabError, free_ports, is_running, spawn, stop, wait_ready
from lab.webroot import WebrootServer, serve_directory

STATE_FILE = "lab.json"
DAEMONS = ("named", "pebble", "unbound")
EAB_KID = "oeagent-lab-eab"


@dataclass(frozen=True)
class LabInfo:
    """Where everything of a running lab is. All services listen on ``bind_address``
    (127.0.0.1, or the bridge address of a lab.netns network)."""

    dir: Path
    acme_directory: str
    """Pebble's ACME directory URL (https)."""
    management_url: str
    """Pebble's management interface (https, same CA bundle): /roots/0, /intermediates/0."""
    http_port: int
    """Where Pebble connects for http-01 (Pebble's ``httpPort``)."""
    tls_port: int
    bind_address: str
    bind_port: int
    zone: str
    """The DNSSEC-signed zone; every name in it resolves to 127.0.0.1."""
    plain_zone: str
    """An unsigned zone with the same records and update policy."""
    tsig_key_name: str
    tsig_algorithm: str
    tsig_key_file: Path
    unbound_port: int
    """The validating resolver (trust anchor: the signed zone's DS)."""
    https_port: int
    """Where nginx serves the well-known document once ``start_nginx`` was called."""
    pebble_root_pem: Path
    pebble_intermediate_pem: Path
    https_ca_pem: Path
    """The CA of Pebble's own HTTPS listener: the client's ``acme.ca_bundle``."""
    config_path: Path
    """The lab's ready-to-use oeagent.toml."""
    cert_validity_seconds: int | None
    namespace: str | None = None
    """The network namespace the lab runs in (None: the root namespace, on loopback)."""
    eab_kid: str | None = None
    """With ``Lab(eab=True)``: Pebble requires External Account Binding with this key id..."""
    eab_key_file: Path | None = None
    """...and this HMAC key (base64url, 0600); the lab's oeagent.toml uses both."""

    def to_json(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self).items()
        return {k: str(v) if isinstance(v, Path) else v for k, v in fields}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabInfo:
        values: dict[str, Any] = {}
        for fld in dataclasses.fields(cls):
            if fld.name not in data and fld.default is not dataclasses.MISSING:
                continue  # a lab.json written before the field existed
            value = data[fld.name]
            is_path = fld.type in ("Path", Path, "Path | None")
            values[fld.name] = Path(value) if is_path and value is not None else value
        return cls(**values)


@dataclass(frozen=True)
class PebbleSettings:
    """Pebble settings a test asks for on one restart (``Lab.restart_pebble_with``)."""

    eab_keys: Mapping[str, str] | None = None
    domain_blocklist: tuple[str, ...] = ()


class Lab:
    """One lab in ``directory``: ``up()``, ``down()``, ``status()`` and helpers for tests."""

    def __init__(self, directory: Path, cert_validity_seconds: int | None = None,
                 address: str = "127.0.0.1", namespace: str | None = None,
                 eab: bool = False) -> None:
        self.dir = Path(directory).resolve()
        self.cert_validity_seconds = cert_validity_seconds
        # Pebble requires External Account Binding (a key id and HMAC key made at `up`).
        self.eab = eab
        # Where every service listens: loopback, or the bridge address of a lab.netns
        # network so hosts in namespaces reach the CA, the DNS servers and nginx too.
        self.address = address
        self.namespace = namespace
        self._popens: dict[str, subprocess.Popen[bytes]] = {}

    # ---- state file ----------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.dir / STATE_FILE

    def _load(self) -> tuple[LabInfo | None, dict[str, Daemon]]:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None, {}
        except (OSError, ValueError) as exc:
            raise LabError(f"cannot read {self.state_file}: {exc}") from exc
        daemons = {n: Daemon.from_json(n, d) for n, d in data.get("daemons", {}).items()}
        info = LabInfo.from_json(data["info"]) if data.get("info") else None
        return info, daemons

    def _save(self, info: LabInfo | None, daemons: Mapping[str, Daemon]) -> None:
        data = {
            "info": info.to_json() if info else None,
            "daemons": {name: d.to_json() for name, d in daemons.items()},
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.state_file)

    @property
    def info(self) -> LabInfo:
        info, _ = self._load()
        if info is None:
            raise LabError(f"no lab is up in {self.dir} (no {STATE_FILE} with lab info)")
        return info

    # ---- lifecycle -----------------------------------------------------------------------

    def status(self) -> dict[str, bool]:
        """Each daemon recorded in lab.json, and whether it is still running."""
        _, daemons = self._load()
        return {name: is_running(d) for name, d in daemons.items()}

    def up(self, timeout: float = 30) -> LabInfo:
        """Start every service and return once each answers; stop all again on failure."""
        current, daemons = self._load()
        running = daemons and all(is_running(d) for d in daemons.values())
        if (current is not None and running and set(DAEMONS) <= set(daemons)
                and (current.eab_kid is not None) == self.eab):
            if current.cert_validity_seconds != self.cert_validity_seconds:
                return self._restart_pebble(self.cert_validity_seconds)
            return current
        self.down()
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            with in_namespace(self.namespace):
                return self._start(timeout)
        except BaseException:
            with contextlib.suppress(LabError):
                self.down()
            raise

    def _start(self, timeout: float) -> LabInfo:
        d = self.dir
        acme_port, mgmt_port, http_port, tls_port, bind_port, unbound_port, https_port = (
            free_ports(7, self.address)
        )
        https_ca = d / "pebble-https-ca.pem"
        pebble_dir = d / "pebble"
        pebble_dir.mkdir(exist_ok=True)
        tlsca.make_https_identity(
            https_ca, pebble_dir / "https-cert.pem", pebble_dir / "https-key.pem", self.address
        )
        tsig_file = d / "tsig.key"
        bind.write_tsig_key(tsig_file)
        (d / "webroot").mkdir(exist_ok=True)
        (d / "logs").mkdir(exist_ok=True)
        eab_kid, eab_key_file = (EAB_KID, d / "eab.key") if self.eab else (None, None)
        eab_keys = {EAB_KID: pebble.write_eab_key(d / "eab.key")} if self.eab else None
        info = LabInfo(
            dir=d,
            acme_directory=f"https://{self.address}:{acme_port}/dir",
            management_url=f"https://{self.address}:{mgmt_port}",
            http_port=http_port,
            tls_port=tls_port,
            bind_address=self.address,
            bind_port=bind_port,
            zone=bind.ZONE,
            plain_zone=bind.PLAIN_ZONE,
            tsig_key_name=bind.TSIG_KEY_NAME,
            tsig_algorithm=bind.TSIG_ALGORITHM,
            tsig_key_file=tsig_file,
            unbound_port=unbound_port,
            https_port=https_port,
            pebble_root_pem=d / "pebble-root.pem",
            pebble_intermediate_pem=d / "pebble-intermediate.pem",
            https_ca_pem=https_ca,
            config_path=d / "oeagent.toml",
            cert_validity_seconds=self.cert_validity_seconds,
            namespace=self.namespace,
            eab_kid=eab_kid,
            eab_key_file=eab_key_file,
        )
        daemons: dict[str, Daemon] = {}

        def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> Daemon:
            daemon, popen = spawn(name, argv, d / "logs" / f"{name}.log", env=env, cwd=d)
            daemons[name] = daemon
            self._popens[name] = popen
            self._save(None, daemons)  # so `down` finds it even if `up` dies half-way
            return daemon

        named_conf = bind.write_config(d / "bind", bind_port, tsig_file, self.address)
        named = start("named", bind.argv(named_conf))
        pebble_conf = pebble.write_config(
            pebble_dir, acme_port=acme_port, management_port=mgmt_port, http_port=http_port,
            tls_port=tls_port, cert=pebble_dir / "https-cert.pem",
            key=pebble_dir / "https-key.pem", validity_seconds=self.cert_validity_seconds,
            address=self.address, eab_keys=eab_keys,
        )
        pebble_daemon = start("pebble", pebble.argv(pebble_conf, bind_port, self.address),
                              pebble.environment())
        wait_ready(named, lambda: bind.zone_is_signed(bind_port, self.address), timeout,
                   "signed zone")
        unbound_conf = unbound.write_config(
            d / "unbound", unbound_port, bind_port, bind.ds_records(bind_port, self.address),
            self.address,
        )
        unbound_daemon = start("unbound", unbound.argv(unbound_conf))
        wait_ready(
            pebble_daemon,
            lambda: pebble.directory_ready(info.acme_directory, https_ca),
            timeout, "ACME directory",
        )
        self._fetch_roots(info)
        wait_ready(unbound_daemon, lambda: unbound.validates(unbound_port, self.address), timeout,
                   "validated (AD) answer")
        self._save(info, daemons)
        self.write_config(info.config_path, root=d, info=info)
        return info

    def down(self) -> None:
        """Stop every recorded daemon (process group, then wait); keep the files for post-mortem."""
        info, daemons = self._load()
        errors = []
        for name in reversed(list(daemons)):
            try:
                stop(daemons[name], self._popens.pop(name, None))
            except LabError as exc:
                errors.append(str(exc))
        if daemons:
            self._save(info, {})
        if errors:
            raise LabError("; ".join(errors))

    def restart_pebble(self, cert_validity_seconds: int | None = None) -> LabInfo:
        """Restart Pebble (forgetting all accounts and orders, with a NEW root); return the info.

        With ``cert_validity_seconds`` the new Pebble issues certificates of that lifetime;
        without, it keeps the lifetime it had.
        """
        if cert_validity_seconds is None:
            cert_validity_seconds = self.info.cert_validity_seconds
        return self._restart_pebble(cert_validity_seconds)

    def _restart_pebble(self, cert_validity_seconds: int | None,
                        env: Mapping[str, str] | None = None,
                        settings: PebbleSettings | None = None) -> LabInfo:
        with in_namespace(self.info.namespace):
            return self._restart_pebble_here(cert_validity_seconds, env, settings)

    def restart_pebble_with(self, env: Mapping[str, str] | None = None, *,
                            eab_keys: Mapping[str, str] | None = None,
                            domain_blocklist: Sequence[str] = ()) -> LabInfo:
        """Restart Pebble with extra ``PEBBLE_*`` settings (e.g. ``PEBBLE_WFE_NONCEREJECT``,
        ``PEBBLE_VA_SLEEPTIME``), External Account Binding required with ``eab_keys`` (key
        id -> base64url HMAC key), or names refused (``domain_blocklist``: rejectedIdentifier);
        ``restart_pebble()`` goes back to the lab's defaults. Pebble forgets everything and
        makes a new root, as with every restart."""
        return self._restart_pebble(self.info.cert_validity_seconds, env,
                                    PebbleSettings(eab_keys, tuple(domain_blocklist)))

    def _lab_eab_keys(self, info: LabInfo) -> dict[str, str] | None:
        if info.eab_kid is None or info.eab_key_file is None:
            return None
        return {info.eab_kid: info.eab_key_file.read_text().strip()}

    def _restart_pebble_here(self, cert_validity_seconds: int | None,
                             env: Mapping[str, str] | None = None,
                             settings: PebbleSettings | None = None) -> LabInfo:
        info, daemons = self._load()
        if info is None or "pebble" not in daemons:
            raise LabError(f"no lab is up in {self.dir}")
        if is_running(daemons["pebble"]):
            stop(daemons["pebble"], self._popens.pop("pebble", None))
        pebble_dir = self.dir / "pebble"
        info = dataclasses.replace(info, cert_validity_seconds=cert_validity_seconds)
        self.cert_validity_seconds = cert_validity_seconds
        acme_port = int(info.acme_directory.rsplit(":", 1)[1].split("/")[0])
        mgmt_port = int(info.management_url.rsplit(":", 1)[1])
        conf = pebble.write_config(
            pebble_dir, acme_port=acme_port, management_port=mgmt_port,
            http_port=info.http_port, tls_port=info.tls_port,
            cert=pebble_dir / "https-cert.pem", key=pebble_dir / "https-key.pem",
            validity_seconds=info.cert_validity_seconds, address=info.bind_address,
            eab_keys=settings.eab_keys if settings else self._lab_eab_keys(info),
            domain_blocklist=settings.domain_blocklist if settings else (),
        )
        daemon, popen = spawn("pebble", pebble.argv(conf, info.bind_port, info.bind_address),
                              self.dir / "logs" / "pebble.log",
                              env=pebble.environment(env), cwd=self.dir, append=True)
        self._popens["pebble"] = popen
        daemons["pebble"] = daemon
        self._save(info, daemons)
        wait_ready(daemon, lambda: pebble.directory_ready(info.acme_directory, info.https_ca_pem),
                   30, "ACME directory")
        self._fetch_roots(info)
        return info

    # ---- fault injection -----------------------------------------------------------------

    def _daemon(self, name: str) -> Daemon:
        _, daemons = self._load()
        if name not in daemons or not is_running(daemons[name]):
            raise LabError(f"{name} is not running in the lab in {self.dir}")
        return daemons[name]

    @contextlib.contextmanager
    def paused(self, name: str) -> Iterator[None]:
        """SIGSTOP daemon ``name`` (its sockets stay open, nothing answers: slower than any
        timeout) and SIGCONT it on leaving (unless it was killed meanwhile)."""
        daemon = self._daemon(name)
        os.killpg(daemon.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            if is_running(daemon):
                os.killpg(daemon.pid, signal.SIGCONT)

    def kill(self, name: str) -> None:
        """SIGKILL daemon ``name`` (a crash, not a shutdown); ``restart_pebble`` brings Pebble
        back."""
        daemon = self._daemon(name)
        os.killpg(daemon.pid, signal.SIGKILL)
        popen = self._popens.get(name)
        if popen is not None:
            popen.wait(timeout=10)
        deadline = time.monotonic() + 10
        while is_running(daemon) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart_named(self, timeout: float = 30) -> None:
        """Start BIND again after ``kill("named")``, as an operator (or systemd) would: the
        same named.conf, zone files, journals and keys, none rewritten, so the updates it
        acknowledged before the crash must come back from its journals and unbound's trust
        anchor (the DS of the same key) still holds. Returns once the zones are signed."""
        info, daemons = self._load()
        if info is None or "named" not in daemons:
            raise LabError(f"no lab is up in {self.dir}")
        if is_running(daemons["named"]):
            raise LabError("named is still running; kill it first")
        with in_namespace(info.namespace):
            daemon, popen = spawn("named", bind.argv(self.dir / "bind" / "named.conf"),
                                  self.dir / "logs" / "named.log", cwd=self.dir, append=True)
            self._popens["named"] = popen
            daemons["named"] = daemon
            self._save(info, daemons)
            wait_ready(daemon, lambda: bind.zone_is_signed(info.bind_port, info.bind_address),
                       timeout, "signed zone")

    # ---- helpers for tests ---------------------------------------------------------------

    def _fetch_roots(self, info: LabInfo) -> str:
        root = pebble.fetch_pem(f"{info.management_url}/roots/0", info.https_ca_pem)
        intermediate = pebble.fetch_pem(
            f"{info.management_url}/intermediates/0", info.https_ca_pem
        )
        info.pebble_root_pem.write_text(root)
        info.pebble_intermediate_pem.write_text(intermediate)
        return root

    def pebble_root_pem(self) -> str:
        """Pebble's current root (PEM), re-fetched and rewritten to pebble-root.pem."""
        with in_namespace(self.info.namespace):
            return self._fetch_roots(self.info)

    def dig(self, name: str, rdtype: str = "A", *, resolver: bool = False,
            tcp: bool = False) -> dns.message.Message:
        """Query BIND directly (authoritative, DO set) or, with ``resolver``, unbound (RD, DO)."""
        info = self.info
        with in_namespace(info.namespace):
            if resolver:
                return unbound.query(info.unbound_port, name, rdtype, address=info.bind_address)
            return bind.query(info.bind_port, name, rdtype, tcp=tcp, address=info.bind_address)

    def send_update(self, update: dns.update.UpdateMessage) -> dns.message.Message:
        """Send a (TSIG-signed) update to the lab's BIND over TCP; return the reply."""
        info = self.info
        with in_namespace(info.namespace):
            return dns.query.tcp(update, info.bind_address, port=info.bind_port, timeout=5)

    def tsig_keyring(self, secret_b64: str | None = None) -> dict[Any, Any]:
        """The lab's TSIG keyring for dnspython (or one with the same name and another secret)."""
        info = self.info
        if secret_b64 is None:
            text = info.tsig_key_file.read_text()
            secret_b64 = text.split('secret "', 1)[1].split('"', 1)[0]
        keyring: dict[Any, Any] = dns.tsigkeyring.from_text({info.tsig_key_name: secret_b64})
        return keyring

    def update_message(self, zone: str | None = None,
                       secret_b64: str | None = None) -> dns.update.UpdateMessage:
        """An RFC 2136 update for ``zone`` (default: the signed zone), TSIG-signed."""
        info = self.info
        return dns.update.UpdateMessage(
            zone or info.zone, keyring=self.tsig_keyring(secret_b64),
            keyalgorithm=dns.tsig.HMAC_SHA256,
        )

    def write_config(self, path: Path, overrides: Mapping[str, Any] | None = None, *,
                     root: Path | None = None, info: LabInfo | None = None) -> Path:
        """Write an oeagent.toml for this lab to ``path``.

        ``root`` (default: the lab directory) holds what oeagent writes: state/, nss/,
        webroot/ (created), pluto/, ipsec.d/. ``overrides`` as in ``config_file.render``.
        """
        info = info or self.info
        root = Path(root or self.dir)
        (root / "webroot").mkdir(parents=True, exist_ok=True)
        settings = config_file.lab_settings(
            root=root,
            acme_directory=info.acme_directory,
            ca_bundle=info.https_ca_pem,
            trust_anchors=info.pebble_root_pem,
            http_port=info.http_port,
            bind_port=info.bind_port,
            tsig_key_name=info.tsig_key_name,
            tsig_algorithm=info.tsig_algorithm,
            tsig_secret_file=info.tsig_key_file,
            address=info.bind_address,
            unbound_port=info.unbound_port,
            https_port=info.https_port,
            eab_kid=info.eab_kid,
            eab_key_file=info.eab_key_file,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config_file.render(settings, overrides))
        return path

    def start_nginx(self, cert: Path, key: Path, webroot: Path | None = None,
                    redirect_to: str | None = None) -> int:
        """(Re)start nginx serving ``webroot`` over HTTPS with ``cert`` (full chain) and ``key``
        (``redirect_to``: the well-known document answers 302 there instead).

        Returns the port (``info.https_port``). Restarting picks up a new certificate.
        """
        info, daemons = self._load()
        if info is None:
            raise LabError(f"no lab is up in {self.dir}")
        self.stop_nginx()
        info, daemons = self._load()
        assert info is not None
        root = Path(webroot or info.dir / "webroot")
        conf = nginx.write_config(self.dir / "nginx", self.dir / "logs", info.https_port,
                                  Path(cert), Path(key), root, info.bind_address, redirect_to)
        with in_namespace(info.namespace):
            daemon, popen = spawn("nginx", nginx.argv(conf), self.dir / "logs" / "nginx.log",
                                  cwd=self.dir)
        self._popens["nginx"] = popen
        daemons["nginx"] = daemon
        self._save(info, daemons)
        with in_namespace(info.namespace):
            wait_ready(daemon, lambda: nginx.listening(info.https_port, info.bind_address), 10,
                       "HTTPS port")
        return info.https_port

    def stop_nginx(self) -> None:
        info, daemons = self._load()
        if "nginx" in daemons:
            stop(daemons.pop("nginx"), self._popens.pop("nginx", None))
            self._save(info, daemons)

    @contextlib.contextmanager
    def serve_webroot(self, webroot: Path | None = None) -> Iterator[WebrootServer]:
        """Serve ``webroot`` (default: the lab's) over HTTP on bind_address:http_port (a thread)."""
        info = self.info
        with in_namespace(info.namespace):
            serving = serve_directory(webroot or info.dir / "webroot", info.http_port,
                                      info.bind_address)
            # The listening socket is created (in the namespace) on entering.
            server = serving.__enter__()
        try:
            yield server
        finally:
            serving.__exit__(None, None, None)
