"""The configuration: TOML read with ``tomllib`` into typed, frozen objects.

Loading never stops at the first problem: every unknown key, wrong type, bad value and missing
file is collected with its key path and raised together as one ConfigError (exit 78), so an
operator fixes a config in one pass. Secrets are not in the TOML; see ``oeagent.secrets``.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from oeagent import names
from oeagent.errors import ConfigError
from oeagent.secrets import Secret, read_secret

DEFAULT_CONFIG_PATH = Path("/etc/oeagent/oeagent.toml")
CONFIG_ENV = "OEAGENT_CONFIG"
LETSENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
BUILTIN_TRUST_ANCHORS = ("letsencrypt",)
KEY_ALGORITHMS = ("ecdsa-p256", "rsa-2048", "rsa-3072")
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-md5")


@dataclass(frozen=True)
class HostConfig:
    names: tuple[str, ...]
    """FQDNs in the certificate; the first is the host's primary identity."""
    addresses: tuple[str, ...] = ()
    """Optional IP identifiers (http-01 only)."""


@dataclass(frozen=True)
class AcmeConfig:
    directory: str = LETSENCRYPT_DIRECTORY
    email: str | None = None
    agree_tos: bool = False
    ca_bundle: Path | None = None
    profile: str | None = None
    eab_kid: str | None = None
    eab_hmac_key: Secret | None = None
    network_timeout: float = 30.0
    order_timeout: float = 120.0


@dataclass(frozen=True)
class KeyConfig:
    algorithm: str = "ecdsa-p256"
    reuse: bool = True


@dataclass(frozen=True)
class HttpChallengeConfig:
    mode: str = "standalone"
    """``standalone`` (built-in responder) or ``webroot``."""
    listen_address: str = "::"
    port: int = 80
    webroot: Path | None = None


@dataclass(frozen=True)
class DnsChallengeConfig:
    server: str = "127.0.0.1"
    """Address of the primary server that accepts updates (and answers authoritatively)."""
    port: int = 53
    zone: str | None = None
    tsig_key_name: str = "oeagent"
    tsig_algorithm: str = "hmac-sha256"
    tsig_secret: Secret | None = None
    ttl: int = 60
    propagation_timeout: float = 60.0


@dataclass(frozen=True)
class ChallengeConfig:
    type: str = "http-01"
    http: HttpChallengeConfig = field(default_factory=HttpChallengeConfig)
    dns: DnsChallengeConfig = field(default_factory=DnsChallengeConfig)


@dataclass(frozen=True)
class NssConfig:
    database: str = "sql:/var/lib/ipsec/nss"
    nickname: str = "oeagent"
    password_file: Path | None = None
    trust_anchors: str = "letsencrypt"
    """``letsencrypt`` (ISRG Root X1 and X2, shipped) or the path of a PEM bundle."""

    @property
    def directory(self) -> Path:
        return Path(self.database.removeprefix("sql:"))


@dataclass(frozen=True)
class PlutoConfig:
    ctlsocket: Path = Path("/run/pluto/pluto.ctl")
    ipsec_dir: Path = Path("/etc/ipsec.d")


PUBLISH_BACKENDS = ("rfc2136", "zonefile", "wellknown")
PUBLISH_MODES = ("testing", "enforce")


@dataclass(frozen=True)
class PublishDnsConfig:
    """RFC 2136 target for the advertisement; unset keys take [challenge.dns]'s values."""

    server: str = "127.0.0.1"
    port: int = 53
    zone: str | None = None
    tsig_key_name: str = "oeagent"
    tsig_algorithm: str = "hmac-sha256"
    tsig_secret: Secret | None = None
    ttl: int = 300
    timeout: float = 10.0


@dataclass(frozen=True)
class PublishWellKnownConfig:
    mode: str = "webroot"
    """``webroot`` (the host's web server serves it) or ``serve`` (``oeagent serve``)."""
    webroot: Path | None = None
    listen_address: str = "::"
    port: int = 443
    """The HTTPS port clients use: where ``serve`` listens and where verification connects."""
    ca_bundle: Path | None = None
    """Roots trusted when verifying the document over HTTPS (default: the system store)."""


@dataclass(frozen=True)
class PublishConfig:
    backends: tuple[str, ...] = ()
    """Empty: publishing is not configured (enroll does not publish)."""
    mode: str = "enforce"
    max_age: int = 86_400
    addresses: tuple[str, ...] = ()
    """Addresses to advertise (default: host.addresses)."""
    reverse: bool = False
    """Also publish IPSECKEY at the reverse names of the addresses (you control that zone)."""
    resolver: str = "127.0.0.1"
    """The validating resolver used to verify (loopback only: its AD bit is trusted)."""
    resolver_port: int = 53
    resolver_trusted: bool = False
    """Allow a resolver that is not on loopback and trust its AD bit (an explicit opt-in,
    only over a protected channel, e.g. a lab's resolver on a private bridge)."""
    verify_timeout: float = 60.0
    dns: PublishDnsConfig = field(default_factory=PublishDnsConfig)
    zonefile: Path | None = None
    wellknown: PublishWellKnownConfig = field(default_factory=PublishWellKnownConfig)

    @property
    def enabled(self) -> bool:
        return bool(self.backends)


@dataclass(frozen=True)
class RenewalConfig:
    """When to renew and how to retry (see ``oeagent.renewal``); durations in seconds."""

    ari: bool = True
    """Follow the CA's ACME Renewal Information (RFC 9773) when its directory offers it."""
    jitter: float = 0.05
    """Without ARI: renew up to this fraction of the lifetime earlier than the rule says."""
    retry_initial: float = 60.0
    """First wait after a failed renewal; doubles with every failure."""
    retry_max: float = 6 * 3600.0
    """Longest wait between two attempts (a CA's Retry-After can still ask for longer)."""
    check_interval: float = 12 * 3600.0
    """The agent looks at the certificate at least this often, whatever the schedule says."""


@dataclass(frozen=True)
class HooksConfig:
    post_deploy: tuple[tuple[str, ...], ...] = ()
    """Commands (argument lists, no shell) run after a certificate is deployed."""
    timeout: float = 120.0


@dataclass(frozen=True)
class RolloverConfig:
    key_lifetime: float = 0.0
    """Seconds a certificate key is used before the next one takes over; 0 = forever."""
    announce: float = 2 * 86400.0
    """How long the next key is announced (its pins published) before it is switched in."""


@dataclass(frozen=True)
class DiscoveryConfig:
    resolver: str = "127.0.0.1"
    """The validating resolver discovery asks (DO set); its AD bit counts only if trusted."""
    resolver_port: int = 53
    resolver_trusted: bool = False
    """Trust AD from a resolver that is not on loopback (only over a protected channel)."""
    dns_timeout: float = 3.0
    https: bool = True
    """Fall back to https://<name>/.well-known/oe-ipsec when DNS gives no signed advertisement."""
    https_port: int = 443
    """Only test labs change this: the well-known document is always on 443 in real use."""
    https_ca_bundle: Path | None = None
    """PEM roots for the HTTPS fallback (default: the system store)."""
    https_timeout: float = 5.0
    concurrency: int = 8
    min_cache: int = 300
    max_cache: int = 86_400
    """Bounds on how long a DNS answer's TTL keeps an advertisement cached."""


@dataclass(frozen=True)
class StaticPeer:
    fqdn: str
    address: str
    auth: str = "ecdsa"
    mode: str = "enforce"


@dataclass(frozen=True)
class PolicyConfig:
    private_or_clear: tuple[str, ...] = ("0.0.0.0/0", "::/0")
    """Ranges that get NULL-authenticated OE (encrypt if the peer speaks IKE, else clear)."""
    clear: tuple[str, ...] = ()
    """Extra never-encrypt exceptions (the ACME CA and DNS servers are added automatically)."""
    block: tuple[str, ...] = ()
    peers: tuple[StaticPeer, ...] = ()
    """Authenticated peers known from config rather than discovery."""
    responder: bool = True
    """When enrolled, answer NULL-auth clients with the certificate (README "OE policy")."""


@dataclass(frozen=True)
class Config:
    host: HostConfig
    state_dir: Path = Path("/var/lib/oeagent")
    lock_timeout: float = 60.0
    acme: AcmeConfig = field(default_factory=AcmeConfig)
    key: KeyConfig = field(default_factory=KeyConfig)
    challenge: ChallengeConfig = field(default_factory=ChallengeConfig)
    nss: NssConfig = field(default_factory=NssConfig)
    pluto: PlutoConfig = field(default_factory=PlutoConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    renewal: RenewalConfig = field(default_factory=RenewalConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    rollover: RolloverConfig = field(default_factory=RolloverConfig)
    source: Path | None = None


def config_path_from(cli_value: str | None) -> Path:
    """``--config`` wins, then ``$OEAGENT_CONFIG``, then the default path."""
    if cli_value:
        return Path(cli_value)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load(path: Path) -> Config:
    """Read and validate the config at ``path``; raise ConfigError with every problem."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"file not found: {path}"], path) from None
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror}"], path) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(["not valid UTF-8"], path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], path) from None
    return parse(data, base_dir=path.parent.resolve(), source=path)


def parse(data: dict[str, Any], base_dir: Path, source: Path | None = None) -> Config:
    """Build a Config from already-decoded TOML; relative paths are taken from ``base_dir``."""
    reader = _Reader(data, base_dir)
    config = _build(reader)
    reader.reject_unknown()
    if reader.problems or config is None:
        raise ConfigError(reader.problems, source)
    return Config(**{**config.__dict__, "source": source})


T = TypeVar("T")
_MISSING: Any = object()


class _Table:
    """One TOML table being read: tracks which keys were used and where it sits."""

    def __init__(self, reader: _Reader, data: dict[str, Any], path: str) -> None:
        self.reader = reader
        self.data = data
        self.path = path
        self.used: set[str] = set()
        reader.tables.append(self)

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, kind: type | tuple[type, ...], kind_name: str) -> Any:
        self.used.add(key)
        if key not in self.data:
            return _MISSING
        value = self.data[key]
        # bool is an int in Python; a TOML boolean is never a number here.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            self.reader.problem(self.key_path(key), f"must be {kind_name}, not a boolean")
            return _MISSING
        if not isinstance(value, kind):
            self.reader.problem(self.key_path(key), f"must be {kind_name}, not {_toml_type(value)}")
            return _MISSING
        return value

    def text(self, key: str, default: T, check: Callable[[str], Any] | None = None) -> str | T:
        value = self._get(key, str, "a string")
        if value is _MISSING:
            return default
        if check is not None:
            try:
                return check(value)  # type: ignore[no-any-return]
            except ValueError as exc:
                self.reader.problem(self.key_path(key), str(exc))
                return default
        return value  # type: ignore[no-any-return]

    def optional_text(self, key: str, check: Callable[[str], Any] | None = None) -> str | None:
        value = self.text(key, None, check)
        return value or None

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(key, default)
        if value not in choices:
            self.reader.problem(
                self.key_path(key), f"must be one of {', '.join(choices)}; got {value!r}"
            )
            return default
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self._get(key, (int, float), "a number")
        if value is _MISSING:
            return default
        if not low <= value <= high:
            self.reader.problem(
                self.key_path(key), f"must be between {low:g} and {high:g}; got {value}"
            )
            return default
        return float(value)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self._get(key, int, "an integer")
        if value is _MISSING:
            return default
        if not low <= value <= high:
            self.reader.problem(
                self.key_path(key), f"must be between {low} and {high}; got {value}"
            )
            return default
        return int(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, bool, "true or false")
        return default if value is _MISSING else bool(value)

    def duration(self, key: str, default: float, low: float, high: float) -> float:
        """Seconds, given as a number or a string with a unit: "90s", "15m", "12h", "365d"."""
        value = self._get(key, (int, float, str), "a number of seconds or a string like '12h'")
        if value is _MISSING:
            return default
        seconds = _parse_duration(value) if isinstance(value, str) else float(value)
        if seconds is None:
            self.reader.problem(
                self.key_path(key), f"{value!r} is not a duration (e.g. 90, '90s', '12h', '365d')"
            )
            return default
        if not low <= seconds <= high:
            self.reader.problem(
                self.key_path(key), f"must be between {low:g} and {high:g} seconds; got {seconds:g}"
            )
            return default
        return seconds

    def argv_lists(self, key: str) -> tuple[tuple[str, ...], ...]:
        """A list of commands, each a non-empty list of strings (never a shell string)."""
        value = self._get(key, list, "a list of argument lists")
        if value is _MISSING:
            return ()
        out = []
        for index, item in enumerate(value):
            where = f"{self.key_path(key)}[{index}]"
            if isinstance(item, str):
                self.reader.problem(
                    where, "must be an argument list like [\"/usr/bin/cmd\", \"arg\"], not a "
                    "string: hooks never run through a shell"
                )
            elif not isinstance(item, list) or not item or not all(
                isinstance(arg, str) and "\x00" not in arg for arg in item
            ):
                self.reader.problem(where, "must be a non-empty list of strings")
            elif not os.path.isabs(item[0]):
                self.reader.problem(where, f"the program {item[0]!r} must be an absolute path")
            else:
                out.append(tuple(item))
        return tuple(out)

    def text_list(self, key: str, check: Callable[[str], str]) -> tuple[str, ...]:
        value = self._get(key, list, "a list of strings")
        if value is _MISSING:
            return ()
        out: list[str] = []
        for index, item in enumerate(value):
            where = f"{self.key_path(key)}[{index}]"
            if not isinstance(item, str):
                self.reader.problem(where, f"must be a string, not {_toml_type(item)}")
                continue
            try:
                checked = check(item)
            except ValueError as exc:
                self.reader.problem(where, str(exc))
                continue
            if checked in out:
                self.reader.problem(where, f"{item!r} is listed twice")
                continue
            out.append(checked)
        return tuple(out)

    def path_value(self, key: str, default: Path | None, must_exist: bool = False) -> Path | None:
        value = self.text(key, None)
        if not value:
            return default
        if "\x00" in value:
            self.reader.problem(self.key_path(key), "contains a NUL byte")
            return default
        resolved = Path(value) if os.path.isabs(value) else self.reader.base_dir / value
        if must_exist and not resolved.exists():
            self.reader.problem(self.key_path(key), f"file not found: {resolved}")
        return resolved

    def secret(self, key: str) -> Secret | None:
        value = self.text(key, None)
        if not value:
            return None
        try:
            return read_secret(value, self.reader.base_dir)
        except ValueError as exc:
            self.reader.problem(self.key_path(key), str(exc))
            return None

    def table(self, key: str) -> _Table:
        value = self._get(key, dict, "a table")
        return _Table(self.reader, {} if value is _MISSING else value, self.key_path(key))

    def require(self, key: str, why: str) -> None:
        if key not in self.data:
            self.reader.problem(self.key_path(key), f"is required: {why}")


class _Reader:
    def __init__(self, data: dict[str, Any], base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.tables: list[_Table] = []
        self.root = _Table(self, data, "")

    def problem(self, key_path: str, message: str) -> None:
        self.problems.append(f"{key_path}: {message}")

    def reject_unknown(self) -> None:
        for table in self.tables:
            for key in table.data:
                if key not in table.used:
                    self.problem(table.key_path(key), "unknown key")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _parse_duration(text: str) -> float | None:
    text = text.strip().lower()
    if text and text[-1] in _UNITS:
        number, unit = text[:-1].strip(), _UNITS[text[-1]]
    else:
        number, unit = text, 1
    try:
        seconds = float(number) * unit
    except ValueError:
        return None
    return seconds if seconds >= 0 and seconds != float("inf") else None


def _toml_type(value: object) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _check_url(value: str) -> str:
    if not value.startswith("https://"):
        if value.startswith("http://"):
            raise ValueError("must be an https:// URL (the ACME protocol requires TLS)")
        raise ValueError(f"{value!r} is not an https:// URL")
    return value


def _check_email(value: str) -> str:
    local, _, domain = value.partition("@")
    if not local or not domain or any(c in value for c in " \t\r\n,;<>\x00"):
        raise ValueError(f"{value!r} is not an email address")
    return value


def _check_profile(value: str) -> str:
    if not value.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"{value!r} is not a profile name")
    return value


def _build(reader: _Reader) -> Config | None:
    root = reader.root
    host_table = root.table("host")
    host_table.require("names", "the certificate needs at least one FQDN")
    host = HostConfig(
        names=host_table.text_list("names", names.normalize_fqdn),
        addresses=host_table.text_list("addresses", names.normalize_ip),
    )
    if host_table.data.get("names") == []:
        reader.problem("host.names", "must list at least one FQDN")

    acme_t = root.table("acme")
    eab_kid = acme_t.optional_text("eab_kid")
    eab_key = acme_t.secret("eab_hmac_key_file")
    if bool(eab_kid) != bool(eab_key) and not any(
        "acme.eab_hmac_key_file" in p for p in reader.problems
    ):
        reader.problem("acme.eab_kid", "eab_kid and eab_hmac_key_file must be given together")
    acme = AcmeConfig(
        directory=acme_t.text("directory", LETSENCRYPT_DIRECTORY, _check_url),
        email=acme_t.optional_text("email", _check_email),
        agree_tos=acme_t.boolean("agree_tos", False),
        ca_bundle=acme_t.path_value("ca_bundle", None, must_exist=True),
        profile=acme_t.optional_text("profile", _check_profile),
        eab_kid=eab_kid,
        eab_hmac_key=eab_key,
        network_timeout=acme_t.number("network_timeout", 30.0, 1, 600),
        order_timeout=acme_t.number("order_timeout", 120.0, 5, 3600),
    )

    key_t = root.table("key")
    key = KeyConfig(
        algorithm=key_t.choice("algorithm", "ecdsa-p256", KEY_ALGORITHMS),
        reuse=key_t.boolean("reuse", True),
    )

    chall_t = root.table("challenge")
    ctype = chall_t.choice("type", "http-01", ("http-01", "dns-01"))
    http_t = chall_t.table("http")
    http = HttpChallengeConfig(
        mode=http_t.choice("mode", "standalone", ("standalone", "webroot")),
        listen_address=http_t.text("listen_address", "::", names.normalize_ip),
        port=http_t.integer("port", 80, 1, 65535),
        webroot=http_t.path_value("webroot", None),
    )
    if ctype == "http-01" and http.mode == "webroot" and http.webroot is None:
        reader.problem("challenge.http.webroot", "is required when challenge.http.mode = 'webroot'")
    dns_t = chall_t.table("dns")
    dns = DnsChallengeConfig(
        server=dns_t.text("server", "127.0.0.1", names.normalize_ip),
        port=dns_t.integer("port", 53, 1, 65535),
        zone=dns_t.optional_text("zone", names.normalize_fqdn),
        tsig_key_name=dns_t.text("tsig_key_name", "oeagent", _check_key_name),
        tsig_algorithm=dns_t.choice("tsig_algorithm", "hmac-sha256", TSIG_ALGORITHMS),
        tsig_secret=dns_t.secret("tsig_secret_file"),
        ttl=dns_t.integer("ttl", 60, 0, 86400),
        propagation_timeout=dns_t.number("propagation_timeout", 60.0, 1, 3600),
    )
    if ctype == "dns-01" and dns.tsig_secret is None and "tsig_secret_file" not in dns_t.data:
        reader.problem(
            "challenge.dns.tsig_secret_file",
            "is required for dns-01 (RFC 2136 updates are TSIG-signed)",
        )
    if ctype == "dns-01" and host.addresses:
        reader.problem(
            "host.addresses", "IP identifiers can only be validated with http-01, not dns-01"
        )
    challenge = ChallengeConfig(type=ctype, http=http, dns=dns)

    nss_t = root.table("nss")
    nss = NssConfig(
        database=nss_t.text("database", "sql:/var/lib/ipsec/nss", _check_nss_database(reader)),
        nickname=nss_t.text("nickname", "oeagent", names.check_nickname),
        password_file=nss_t.path_value("password_file", None, must_exist=True),
        trust_anchors=nss_t.text("trust_anchors", "letsencrypt", _check_trust_anchors(reader)),
    )

    pluto_t = root.table("pluto")
    pluto = PlutoConfig(
        ctlsocket=pluto_t.path_value("ctlsocket", Path("/run/pluto/pluto.ctl"))
        or Path("/run/pluto/pluto.ctl"),
        ipsec_dir=pluto_t.path_value("ipsec_dir", Path("/etc/ipsec.d")) or Path("/etc/ipsec.d"),
    )

    state_dir = root.path_value("state_dir", Path("/var/lib/oeagent")) or Path("/var/lib/oeagent")
    return Config(
        host=host,
        state_dir=state_dir,
        lock_timeout=root.number("lock_timeout", 60.0, 0, 3600),
        acme=acme,
        key=key,
        challenge=challenge,
        nss=nss,
        pluto=pluto,
        publish=_build_publish(reader, host, dns),
        renewal=_build_renewal(root),
        hooks=_build_hooks(root),
        rollover=_build_rollover(root),
        discovery=_build_discovery(root.table("discovery")),
        policy=_build_policy(root.table("policy")),
    )


def _build_discovery(t: _Table) -> DiscoveryConfig:
    min_cache = t.integer("min_cache", 300, 60, 86_400)
    max_cache = t.integer("max_cache", 86_400, 60, 31_557_600)
    if max_cache < min_cache:
        t.reader.problem(t.key_path("max_cache"), "must not be smaller than min_cache")
    return DiscoveryConfig(
        resolver=t.text("resolver", "127.0.0.1", names.normalize_ip),
        resolver_port=t.integer("resolver_port", 53, 1, 65535),
        resolver_trusted=t.boolean("resolver_trusted", False),
        dns_timeout=t.number("dns_timeout", 3.0, 0.1, 60),
        https=t.boolean("https", True),
        https_port=t.integer("https_port", 443, 1, 65535),
        https_ca_bundle=t.path_value("https_ca_bundle", None, must_exist=True),
        https_timeout=t.number("https_timeout", 5.0, 0.1, 60),
        concurrency=t.integer("concurrency", 8, 1, 64),
        min_cache=min_cache,
        max_cache=max_cache,
    )


def _check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a network in CIDR notation: {exc}") from None


def _check_peer(value: str) -> str:
    """``"FQDN ADDRESS [ecdsa|rsasig] [enforce|testing]"``, normalized."""
    parts = value.split()
    if not 2 <= len(parts) <= 4:
        raise ValueError(f"{value!r} is not 'FQDN ADDRESS [AUTH] [MODE]'")
    fqdn, address = names.normalize_fqdn(parts[0]), names.normalize_ip(parts[1])
    auth = parts[2] if len(parts) > 2 else "ecdsa"
    mode = parts[3] if len(parts) > 3 else "enforce"
    if auth not in ("ecdsa", "rsasig") or mode not in ("enforce", "testing"):
        raise ValueError(f"{value!r}: auth must be ecdsa or rsasig, mode enforce or testing")
    return f"{fqdn} {address} {auth} {mode}"


def _build_policy(t: _Table) -> PolicyConfig:
    peers = tuple(StaticPeer(*entry.split()) for entry in t.text_list("peers", _check_peer))
    default_oe = ("0.0.0.0/0", "::/0")
    return PolicyConfig(
        private_or_clear=(
            t.text_list("private_or_clear", _check_cidr) if "private_or_clear" in t.data
            else default_oe
        ),
        clear=t.text_list("clear", _check_cidr),
        block=t.text_list("block", _check_cidr),
        peers=peers,
        responder=t.boolean("responder", True),
    )


def _check_loopback(value: str) -> str:
    address = names.normalize_ip(value)
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(
            f"{address} is not a loopback address: the AD bit is only trusted from a "
            "validating resolver on this host (RFC 4035 §4.9.3)"
        )
    return address


def _build_publish(reader: _Reader, host: HostConfig, challenge_dns: DnsChallengeConfig
                   ) -> PublishConfig:
    """The [publish] section; [publish.dns] keys default to those of [challenge.dns]."""
    pub_t = reader.root.table("publish")
    backends = pub_t.text_list("backends", _check_backend)
    dns_t = pub_t.table("dns")
    dns = PublishDnsConfig(
        server=dns_t.text("server", challenge_dns.server, names.normalize_ip),
        port=dns_t.integer("port", challenge_dns.port, 1, 65535),
        zone=dns_t.optional_text("zone", names.normalize_fqdn) or challenge_dns.zone,
        tsig_key_name=dns_t.text("tsig_key_name", challenge_dns.tsig_key_name, _check_key_name),
        tsig_algorithm=dns_t.choice("tsig_algorithm", challenge_dns.tsig_algorithm,
                                    TSIG_ALGORITHMS),
        tsig_secret=dns_t.secret("tsig_secret_file") or challenge_dns.tsig_secret,
        ttl=dns_t.integer("ttl", 300, 0, 86400),
        timeout=dns_t.number("timeout", 10.0, 1, 120),
    )
    if "rfc2136" in backends and dns.tsig_secret is None and not any(
        "tsig_secret_file" in p for p in reader.problems
    ):
        reader.problem("publish.dns.tsig_secret_file",
                       "is required for the rfc2136 backend (or set challenge.dns's)")
    wk_t = pub_t.table("wellknown")
    wellknown = PublishWellKnownConfig(
        mode=wk_t.choice("mode", "webroot", ("webroot", "serve")),
        webroot=wk_t.path_value("webroot", None),
        listen_address=wk_t.text("listen_address", "::", names.normalize_ip),
        port=wk_t.integer("port", 443, 1, 65535),
        ca_bundle=wk_t.path_value("ca_bundle", None, must_exist=True),
    )
    if "wellknown" in backends and wellknown.mode == "webroot" and wellknown.webroot is None:
        reader.problem("publish.wellknown.webroot", "is required when mode = 'webroot'")
    zonefile = pub_t.path_value("zonefile", None)
    if "zonefile" in backends and zonefile is None:
        reader.problem("publish.zonefile", "is required for the zonefile backend")
    addresses = pub_t.text_list("addresses", names.normalize_ip) or host.addresses
    resolver_trusted = pub_t.boolean("resolver_trusted", False)
    return PublishConfig(
        backends=backends,
        mode=pub_t.choice("mode", "enforce", PUBLISH_MODES),
        max_age=pub_t.integer("max_age", 86_400, 60, 31_557_600),
        addresses=addresses,
        reverse=pub_t.boolean("reverse", False),
        resolver=pub_t.text("resolver", "127.0.0.1",
                            names.normalize_ip if resolver_trusted else _check_loopback),
        resolver_port=pub_t.integer("resolver_port", 53, 1, 65535),
        resolver_trusted=resolver_trusted,
        verify_timeout=pub_t.number("verify_timeout", 60.0, 1, 3600),
        dns=dns,
        zonefile=zonefile,
        wellknown=wellknown,
    )


def _check_backend(value: str) -> str:
    if value not in PUBLISH_BACKENDS:
        raise ValueError(f"unknown backend {value!r}; choose from {', '.join(PUBLISH_BACKENDS)}")
    return value


def _build_renewal(root: _Table) -> RenewalConfig:
    t = root.table("renewal")
    initial = t.duration("retry_initial", 60.0, 1, 86400)
    maximum = t.duration("retry_max", 6 * 3600.0, 1, 30 * 86400)
    if maximum < initial:
        root.reader.problem("renewal.retry_max", "must not be shorter than renewal.retry_initial")
    return RenewalConfig(
        ari=t.boolean("ari", True),
        jitter=t.number("jitter", 0.05, 0, 0.2),
        retry_initial=initial,
        retry_max=max(maximum, initial),
        check_interval=t.duration("check_interval", 12 * 3600.0, 1, 12 * 3600),
    )


def _build_hooks(root: _Table) -> HooksConfig:
    t = root.table("hooks")
    return HooksConfig(
        post_deploy=t.argv_lists("post_deploy"),
        timeout=t.duration("timeout", 120.0, 1, 3600),
    )


def _build_rollover(root: _Table) -> RolloverConfig:
    t = root.table("rollover")
    lifetime = t.duration("key_lifetime", 0.0, 0, 20 * 365 * 86400)
    announce = t.duration("announce", 2 * 86400.0, 0, 365 * 86400)
    if lifetime and announce >= lifetime:
        root.reader.problem("rollover.announce", "must be shorter than rollover.key_lifetime")
    return RolloverConfig(key_lifetime=lifetime, announce=announce)


def _check_key_name(value: str) -> str:
    # TSIG key names are domain names; BIND's tsig-keygen names are usually single labels.
    stripped = value.rstrip(".")
    if not stripped or any(not part or len(part) > 63 for part in stripped.split(".")):
        raise ValueError(f"{value!r} is not a valid TSIG key name")
    if any(c in value for c in " \t\r\n\"'\\;\x00/"):
        raise ValueError(f"{value!r} is not a valid TSIG key name")
    return stripped


def _check_nss_database(reader: _Reader) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not value.startswith("sql:"):
            raise ValueError("must be an 'sql:DIRECTORY' NSS database (libreswan 4+ uses sql:)")
        directory = value.removeprefix("sql:")
        if not directory or "\x00" in directory:
            raise ValueError("names no directory")
        path = Path(directory) if os.path.isabs(directory) else reader.base_dir / directory
        return f"sql:{path}"

    return check


def _check_trust_anchors(reader: _Reader) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value in BUILTIN_TRUST_ANCHORS:
            return value
        path = Path(value) if os.path.isabs(value) else reader.base_dir / value
        if not path.is_file():
            raise ValueError(
                f"must be 'letsencrypt' or the path of a PEM bundle; file not found: {path}"
            )
        return str(path)

    return check
