"""The [discovery] and [policy] config sections: defaults, and every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from oeagent import config
from oeagent.config import StaticPeer
from oeagent.errors import ConfigError

BASE = {"host": {"names": ["a.example.org"]}}


def test_defaults(tmp_path: Path) -> None:
    cfg = config.parse(BASE, tmp_path)
    assert cfg.discovery.resolver == "127.0.0.1" and cfg.discovery.https_port == 443
    assert cfg.discovery.https_ca_bundle is None and not cfg.discovery.resolver_trusted
    assert cfg.policy.private_or_clear == ("0.0.0.0/0", "::/0") and cfg.policy.responder
    assert cfg.policy.peer_updown == ""


def test_peer_updown(tmp_path: Path) -> None:
    def updown(value: str) -> str:
        return config.parse({**BASE, "policy": {"peer_updown": value}}, tmp_path).policy.peer_updown

    assert updown("%disabled") == ""
    assert updown(" ipsec _updown --route yes ") == "ipsec _updown --route yes"
    # Written into ipsec.conf as one quoted value: nothing may end it or add a keyword.
    for bad in ('ipsec _updown"\n\tleftid=@evil', "a\nb", 'say "hi"', "back\\slash", "tab\there"):
        with pytest.raises(ConfigError) as info:
            updown(bad)
        assert "policy.peer_updown" in "\n".join(info.value.problems), bad


def test_values(tmp_path: Path) -> None:
    cfg = config.parse({**BASE, "discovery": {"https_port": 8443, "concurrency": 2},
                        "policy": {"clear": ["10.0.0.0/8"], "private_or_clear": [],
                                   "peers": ["DB.Example.org 192.0.2.5", "x.example.org 192.0.2.6 rsasig testing"]}},
                       tmp_path)
    assert cfg.discovery.https_port == 8443 and cfg.discovery.concurrency == 2
    assert cfg.policy.private_or_clear == () and cfg.policy.clear == ("10.0.0.0/8",)
    assert cfg.policy.peers == (StaticPeer("db.example.org", "192.0.2.5", "ecdsa", "enforce"),
                                StaticPeer("x.example.org", "192.0.2.6", "rsasig", "testing"))


def test_every_problem_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse({**BASE,
                      "discovery": {"resolver": "localhost", "https_port": 0, "min_cache": 600,
                                    "max_cache": 120, "https_ca_bundle": "missing.pem", "x": 1},
                      "policy": {"clear": ["10.0.0.1/8", "fe80::/64%eth0"], "block": ["nope"],
                                 "peers": ["db.example.org", "db.example.org 192.0.2.5 psk",
                                           "db.example.org fe80::1%eth0",
                                           "db.example.org ::ffff:198.51.100.5"]}},
                     tmp_path)
    problems = "\n".join(info.value.problems)
    for key in ("discovery.resolver", "discovery.https_port", "discovery.max_cache",
                "discovery.https_ca_bundle", "discovery.x: unknown key", "policy.clear[0]",
                "policy.clear[1]: 'fe80::/64%eth0' has a zone index",
                "policy.block[0]", "policy.peers[0]", "policy.peers[1]",
                "policy.peers[2]: 'fe80::1%eth0' has a zone index",
                "policy.peers[3]: '::ffff:198.51.100.5' is an IPv4-mapped IPv6 address; "
                "give 198.51.100.5"):
        assert key in problems, key


def test_publish_resolver_off_loopback_only_with_explicit_trust(tmp_path: Path) -> None:
    remote = {**BASE, "publish": {"resolver": "198.51.100.2"}}
    with pytest.raises(ConfigError, match=r"publish\.resolver.*not a loopback address"):
        config.parse(remote, tmp_path)
    assert not config.parse(BASE, tmp_path).publish.resolver_trusted
    cfg = config.parse({**BASE, "publish": {"resolver": "198.51.100.2",
                                            "resolver_trusted": True}}, tmp_path)
    assert cfg.publish.resolver == "198.51.100.2" and cfg.publish.resolver_trusted


def test_in_process_validation(tmp_path: Path) -> None:
    assert config.parse(BASE, tmp_path).discovery.validation == "resolver"
    (tmp_path / "anchors.ds").write_text("example. 3600 IN DS 1 13 2 " + "AB" * 32 + "\n")
    cfg = config.parse({**BASE, "discovery": {"validation": "in-process",
                                              "trust_anchors": "anchors.ds"}}, tmp_path)
    assert cfg.discovery.validation == "in-process"
    assert cfg.discovery.trust_anchors == tmp_path / "anchors.ds"
    with pytest.raises(ConfigError) as info:
        config.parse({**BASE, "discovery": {"validation": "in-process"}}, tmp_path)
    assert "trust_anchors" in str(info.value)
    with pytest.raises(ConfigError) as info:
        config.parse({**BASE, "discovery": {"validation": "ad-bit",
                                            "trust_anchors": "missing.ds"}}, tmp_path)
    assert "validation" in str(info.value) and "missing.ds" in str(info.value)


def test_concurrency_bounds(tmp_path: Path) -> None:
    """Up to 256 lookups in flight (the discovery benchmark measures 1, 8, 32 and 128)."""
    assert config.parse({**BASE, "discovery": {"concurrency": 128}}, tmp_path
                        ).discovery.concurrency == 128
    for bad in (0, 257):
        with pytest.raises(ConfigError, match=r"discovery\.concurrency"):
            config.parse({**BASE, "discovery": {"concurrency": bad}}, tmp_path)


def test_scoped_addresses_are_config_problems(tmp_path: Path) -> None:
    """A zone index is refused where the config is read, with its key, not by the policy
    renderer later as an internal error."""
    with pytest.raises(ConfigError) as info:
        config.parse({"host": {"names": ["a.example.org"], "addresses": ["fe80::1%eth0"]},
                      "policy": {"peers": ["db.example.org fe80::1%x;$(reboot)"]},
                      "discovery": {"resolver": "fe80::53%eth0"}}, tmp_path)
    problems = "\n".join(info.value.problems)
    for key in ("host.addresses[0]", "policy.peers[0]", "discovery.resolver"):
        assert f"{key}: " in problems and "zone index" in problems, key


def test_ca_bundles_must_hold_pem_certificates(tmp_path: Path) -> None:
    """A directory or a file without certificates as a CA bundle reached ssl and came back
    from discover as an internal error (IsADirectoryError, SSLError: exit 70)."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "garbage.pem").write_bytes(b"\xff\xfe not a certificate\n")
    with pytest.raises(ConfigError) as info:
        config.parse({**BASE, "acme": {"ca_bundle": "dir"},
                      "discovery": {"https_ca_bundle": "garbage.pem"},
                      "publish": {"wellknown": {"ca_bundle": str(tmp_path / "garbage.pem")}}},
                     tmp_path)
    assert info.value.problems == [
        f"acme.ca_bundle: cannot read {tmp_path / 'dir'}: Is a directory",
        f"publish.wellknown.ca_bundle: {tmp_path / 'garbage.pem'} holds no PEM certificate",
        f"discovery.https_ca_bundle: {tmp_path / 'garbage.pem'} holds no PEM certificate",
    ]


def test_a_bundle_ssl_cannot_load_is_an_oeagent_error(tmp_path: Path) -> None:
    """A certificate header with a broken body passes the config's check; ssl refuses it
    when discovery or publish builds its context: still one clear error, not exit 70."""
    from oeagent.errors import OeagentError
    from oeagent.wellknown_fetch import tls_context

    bundle = tmp_path / "broken.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(OeagentError, match=f"cannot load CA certificates from {bundle}"):
        tls_context(bundle)


def test_nss_trust_anchors_must_hold_pem_certificates(tmp_path: Path) -> None:
    """Checked only to be a file, a bundle without certificates was found out after the CA
    had issued the certificate, when deploying it."""
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError) as info:
        config.parse({**BASE, "nss": {"trust_anchors": "garbage.pem"}}, tmp_path)
    assert info.value.problems == [
        f"nss.trust_anchors: {tmp_path / 'garbage.pem'} holds no PEM certificate"]
