"""Publishing the advertisement: one contract (``base.Backend``), one module per backend,
and this plain registry from the names used in ``publish.backends`` to their factories.

    rfc2136    DNS records by RFC 2136 dynamic update with TSIG
    zonefile   DNS records as a zone-file fragment (and nsupdate input)
    wellknown  the JSON document, in a web root or served by ``oeagent serve``
"""

from __future__ import annotations

from collections.abc import Callable

from oeagent import dnsupdate, resolver
from oeagent.advertisement import DEFAULT_IKE_PORTS
from oeagent.config import Config
from oeagent.publish import records
from oeagent.publish.base import Backend, Desired, Plan, PublishError, Verification
from oeagent.publish.rfc2136 import Rfc2136Backend
from oeagent.publish.wellknown import WellKnownBackend, serve_file
from oeagent.publish.zonefile import ZonefileBackend
from oeagent.state import StateDir

__all__ = ["BACKENDS", "Backend", "Desired", "Plan", "PublishError", "Verification", "make"]


def check_resolver(config: Config) -> resolver.Resolver:
    return resolver.Resolver(config.publish.resolver, config.publish.resolver_port,
                             trusted=config.publish.resolver_trusted)


def _rfc2136(config: Config, state: StateDir) -> Backend:
    pub = config.publish
    if pub.dns.tsig_secret is None:
        raise PublishError("the rfc2136 backend needs publish.dns.tsig_secret_file")
    key = dnsupdate.TsigKey(pub.dns.tsig_key_name, pub.dns.tsig_algorithm, pub.dns.tsig_secret)
    server = dnsupdate.Server(pub.dns.server, pub.dns.port, key, timeout=pub.dns.timeout)
    managed = records.managed_rrsets(config.host.names[0], DEFAULT_IKE_PORTS, pub.addresses,
                                     pub.reverse)
    return Rfc2136Backend(server, pub.dns.zone, pub.dns.ttl, managed, pub.reverse,
                          check_resolver(config), state.root / "published" / "rfc2136.json")


def _zonefile(config: Config, state: StateDir) -> Backend:
    if config.publish.zonefile is None:
        raise PublishError("the zonefile backend needs publish.zonefile")
    return ZonefileBackend(config.publish.zonefile, config.publish.dns.ttl,
                           config.publish.reverse)


def _wellknown(config: Config, state: StateDir) -> Backend:
    wk = config.publish.wellknown
    if wk.mode == "webroot":
        if wk.webroot is None:
            raise PublishError("the wellknown backend in webroot mode needs a webroot")
        path = WellKnownBackend.webroot_path(wk.webroot)
    else:
        path = serve_file(state.root)
    return WellKnownBackend(path, config.host.names[0], wk.port, check_resolver(config),
                            wk.ca_bundle)


BACKENDS: dict[str, Callable[[Config, StateDir], Backend]] = {
    "rfc2136": _rfc2136,
    "zonefile": _zonefile,
    "wellknown": _wellknown,
}


def make(name: str, config: Config, state: StateDir) -> Backend:
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise PublishError(f"unknown publishing backend {name!r}") from None
    return factory(config, state)
