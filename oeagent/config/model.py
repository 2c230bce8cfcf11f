"""The configuration's shape: frozen dataclasses, one per TOML table, and their defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from oeagent.secrets import Secret

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
    config: Path = Path("/etc/ipsec.conf")
    """The ipsec.conf holding the operator's own conns: re-added from it when they use the
    certificate and pluto cannot be asked to --rereadcerts (oeagent.pluto)."""


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
    validation: str = "resolver"
    """``resolver``: believe the (trusted) resolver's AD bit; ``in-process``: validate the
    answers here, from ``trust_anchors``, with CD set (``oeagent.discovery.validate``)."""
    trust_anchors: Path | None = None
    """DS or DNSKEY records in zone-file syntax: the anchors for in-process validation."""


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
    peer_updown: str = ""
    """The updown command pluto runs for each per-peer conn; "" runs none (README "OE
    policy": routing a conn through ``ipsec _updown`` was three quarters of a load)."""


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


