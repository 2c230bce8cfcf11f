"""Building each section of the Config from its table, with the cross-key checks."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path

from oeagent import names
from oeagent.config import tamper
from oeagent.config.model import (
    BUILTIN_TRUST_ANCHORS,
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
from oeagent.config.reader import (
    TILDE,
    _check_email,
    _check_profile,
    _check_url,
    _Reader,
    _Table,
    check_pem_bundle,
)


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
        ca_bundle=acme_t.ca_bundle("ca_bundle"),
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
        config=pluto_t.path_value("config", Path("/etc/ipsec.conf")) or Path("/etc/ipsec.conf"),
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
    validation = t.choice("validation", "resolver", ("resolver", "in-process"))
    anchors = t.path_value("trust_anchors", None, must_exist=True)
    if validation == "in-process" and anchors is None:
        t.reader.problem(t.key_path("trust_anchors"), 'is required when validation = "in-process"')
    return DiscoveryConfig(
        resolver=t.text("resolver", "127.0.0.1", names.normalize_ip),
        resolver_port=t.integer("resolver_port", 53, 1, 65535),
        resolver_trusted=t.boolean("resolver_trusted", False),
        dns_timeout=t.number("dns_timeout", 3.0, 0.1, 60),
        https=t.boolean("https", True),
        https_port=t.integer("https_port", 443, 1, 65535),
        https_ca_bundle=t.ca_bundle("https_ca_bundle"),
        https_timeout=t.number("https_timeout", 5.0, 0.1, 60),
        concurrency=t.integer("concurrency", 8, 1, 256),
        min_cache=min_cache,
        max_cache=max_cache,
        validation=validation,
        trust_anchors=anchors,
    )


def _check_cidr(value: str) -> str:
    if "%" in value:  # ipaddress accepts an IPv6 zone index, which no policy file may carry
        raise ValueError(f"{value!r} has a zone index (%...); give the plain network")
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
    mapped = getattr(ipaddress.ip_address(address), "ipv4_mapped", None)
    if mapped is not None:
        # Its conn would be an IPv6 one that the peer's IPv4 traffic never matches: an
        # enforce peer that looks protected and is not.
        raise ValueError(f"{parts[1]!r} is an IPv4-mapped IPv6 address; give {mapped}")
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
        peer_updown=t.text("peer_updown", "", _check_updown),
    )


def _check_updown(value: str) -> str:
    """A command line for pluto's ``leftupdown=``, or "" (also ``%disabled``) for none. It is
    written into ipsec.conf inside double quotes, so quotes, backslashes and control
    characters (a newline would start a new keyword) are refused."""
    value = value.strip()
    if value == "%disabled":
        return ""
    if any(ch in '"\\' or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"{value!r} has a quote, backslash or control character; it is "
                         "written into ipsec.conf as one quoted value")
    return value


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
        ca_bundle=wk_t.ca_bundle("ca_bundle"),
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
    post_deploy = t.argv_lists("post_deploy")
    for index, argv in enumerate(post_deploy):
        # Hooks run as root after every deploy: a program others may rewrite is as bad as a
        # config file they may rewrite (refused by the reader). A program missing now is
        # reported when the hook runs (it may be installed later).
        exposed = tamper.exposure(Path(argv[0]))
        if exposed is not None:
            root.reader.problem(
                f"hooks.post_deploy[{index}]",
                f"the program {argv[0]!r} is {exposed.what} and would run as root; run: "
                f"{exposed.fix}")
    return HooksConfig(
        post_deploy=post_deploy,
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
        if directory.startswith("~"):
            raise ValueError(TILDE)
        path = Path(directory) if os.path.isabs(directory) else reader.base_dir / directory
        return f"sql:{path}"

    return check


def _check_trust_anchors(reader: _Reader) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value in BUILTIN_TRUST_ANCHORS:
            return value
        if value.startswith("~"):
            raise ValueError(TILDE)
        path = Path(value) if os.path.isabs(value) else reader.base_dir / value
        if not path.is_file():
            raise ValueError(
                f"must be 'letsencrypt' or the path of a PEM bundle; file not found: {path}"
            )
        check_pem_bundle(path)
        return str(path)

    return check

