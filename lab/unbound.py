"""unbound as the lab's validating resolver, with the signed lab zones' DS as trust anchors.

``test.`` is normally an always-NXDOMAIN local zone in unbound; ``nodefault`` lifts that, and
stub zones send ``oe.test``, ``plain.test``, the NSEC3 zones and the others to the lab's
BIND. Everything else, the root included, is stubbed to the same BIND too (which refuses it),
so the resolver can never send a query off the machine.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode

from lab.bind import (
    BOGUS_CHILD,
    INSECURE_CHILD,
    LOCKED_REVERSE_ZONE,
    LOCKED_ZONE,
    NSEC3_INSECURE_CHILD,
    NSEC3_ZONE,
    OPTOUT_INSECURE_CHILD,
    OPTOUT_ZONE,
    PLAIN_ZONE,
    REVERSE_ZONE,
    ZONE,
)
from lab.procs import LabError


def write_config(unbound_dir: Path, port: int, bind_port: int, ds_records: list[str],
                 address: str = "127.0.0.1") -> Path:
    unbound_dir.mkdir(parents=True, exist_ok=True)
    anchor = unbound_dir / f"{ZONE}.ds"
    anchor.write_text("\n".join(ds_records) + "\n")
    stubs = "".join(
        f'stub-zone:\n    name: "{zone}"\n    stub-addr: {address}@{bind_port}\n'
        for zone in (ZONE, INSECURE_CHILD, BOGUS_CHILD, PLAIN_ZONE, LOCKED_ZONE, REVERSE_ZONE,
                     LOCKED_REVERSE_ZONE, NSEC3_ZONE, NSEC3_INSECURE_CHILD, OPTOUT_ZONE,
                     OPTOUT_INSECURE_CHILD, ".")
    )
    conf = unbound_dir / "unbound.conf"
    conf.write_text(
        "server:\n"
        "    verbosity: 1\n"
        f"    interface: {address}@{port}\n"
        f"    port: {port}\n"
        "    do-ip4: yes\n"
        "    do-ip6: no\n"
        "    do-udp: yes\n"
        "    do-tcp: yes\n"
        "    access-control: 127.0.0.0/8 allow\n"
        # Hosts in the lab's network namespaces (lab.netns) ask this resolver too.
        "    access-control: 198.51.100.0/24 allow\n"
        '    username: ""\n'
        '    chroot: ""\n'
        f'    directory: "{unbound_dir}"\n'
        f'    pidfile: "{unbound_dir}/unbound.pid"\n'
        '    logfile: ""\n'
        "    use-syslog: no\n"
        "    log-time-ascii: yes\n"
        "    num-threads: 1\n"
        "    so-reuseport: no\n"
        "    do-not-query-localhost: no\n"
        '    local-zone: "test." nodefault\n'
        # unbound answers the documentation ranges' reverse zones itself unless told not to.
        f'    local-zone: "{REVERSE_ZONE}." nodefault\n'
        f'    local-zone: "{LOCKED_REVERSE_ZONE}." nodefault\n'
        '    module-config: "validator iterator"\n'
        f'    trust-anchor-file: "{anchor}"\n'
        "    val-log-level: 2\n"
        "    ede: yes\n"
        # Short caches: tests change records and expect to see the change soon.
        "    cache-max-ttl: 5\n"
        "    cache-max-negative-ttl: 1\n"
        "    qname-minimisation: no\n"
        "    harden-referral-path: no\n"
        "remote-control:\n"
        "    control-enable: no\n"
        + stubs
    )
    try:
        subprocess.run(
            ["unbound-checkconf", str(conf)], check=True, capture_output=True, text=True,
            timeout=10,
        )
    except subprocess.CalledProcessError as exc:
        raise LabError(f"unbound-checkconf rejected {conf}:\n{exc.stdout}{exc.stderr}") from exc
    return conf


def argv(conf: Path) -> list[str]:
    # -d: stay in the foreground; -p: the lab records the PID itself.
    return ["unbound", "-d", "-p", "-c", str(conf)]


def query(port: int, name: str, rdtype: str, timeout: float = 2.0,
          address: str = "127.0.0.1") -> dns.message.Message:
    """A recursive query with DO set, as a validating stub would send it."""
    msg = dns.message.make_query(name, rdtype, want_dnssec=True, use_edns=0)
    msg.flags |= dns.flags.RD | dns.flags.AD
    return dns.query.udp(msg, address, port=port, timeout=timeout)


def validates(port: int, address: str = "127.0.0.1") -> bool:
    """Ready: a lab name resolves through unbound with the AD bit set."""
    reply = query(port, f"server.{ZONE}", "A", timeout=0.5, address=address)
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.flags & dns.flags.AD)
