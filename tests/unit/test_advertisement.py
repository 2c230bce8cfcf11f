"""The advertisement model and its strict parsers."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from oeagent.advertisement import Advertisement, AdvertisementError, parse_document, parse_txt

NOW = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
PIN = "ab" * 32


def advert(**kw: object) -> Advertisement:
    base: dict[str, object] = {"fqdn": "server.oe.test", "auth": "ecdsa", "pins": (PIN,)}
    base.update(kw)
    return Advertisement(**base)  # type: ignore[arg-type]


def doc(**changes: object) -> bytes:
    document = advert().document(NOW + dt.timedelta(days=1))
    document.update(changes)
    return json.dumps(document).encode()


def test_document_round_trip() -> None:
    ad = advert(addresses=("192.0.2.10",))
    parsed, expires = parse_document(ad.document_bytes(NOW + dt.timedelta(hours=2)), "Server.OE.test", NOW)
    assert parsed == ad and expires == NOW + dt.timedelta(hours=2)


def test_id_changes_with_content() -> None:
    assert advert().id != advert(mode="testing").id != advert(pins=(PIN, "cd" * 32)).id
    assert advert().id == advert().id


def test_txt_round_trip() -> None:
    ad = advert()
    signal = parse_txt(ad.txt())
    assert signal.id == ad.id and signal.mode == "enforce"


@pytest.mark.parametrize(
    ("text", "reason"),
    [("v=OE2; id=0123456789abcdef; mode=enforce", "not v=OE1"),
     ("v=OE1; id=xyz; mode=enforce", "no valid id"),
     ("v=OE1; id=0123456789abcdef; mode=strict", "mode 'strict'"),
     ("v=OE1; v=OE1; id=0123456789abcdef; mode=none", "repeats"),
     ("v=OE1; id=0123456789abcdef; mode=none; " + "x" * 300, "longer than 255")],
)
def test_bad_txt_rejected_with_reason(text: str, reason: str) -> None:
    with pytest.raises(AdvertisementError, match=reason):
        parse_txt(text)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (doc(fqdn="other.oe.test"), "not for 'server.oe.test'"),
        (doc(max_age=-1), "outside"),
        (doc(max_age=10**9), "outside"),
        (doc(max_age="86400"), "wrong type"),
        (doc(max_age=True), "wrong type"),
        (doc(pins=["AB" * 32]), "pins must be"),
        (doc(pins=[]), "pins no key"),
        (doc(mode="strict"), "mode"),
        (doc(auth="psk"), "auth"),
        (doc(expires="2026-12-02T00:00:00Z"), "expired"),
        (doc(expires="2026-12-05T00:00:00"), "no time zone"),
        (doc(id="0" * 16), "id does not match"),
        (doc(ike_ports=[0]), "ike_ports"),
        (doc(addresses=["not-an-ip"]), "addresses"),
        # A zone index is free text to ipaddress: it would carry a newline into ipsec.conf.
        (doc(addresses=["fe80::1%x\n\tauto=add"]), "zone index"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[]", "not a JSON object"),
        (b"{", "not valid JSON"),
        (b'{"version": "OE1", "version": "OE1"}', "repeats the key"),
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
        (b" " * (64 * 1024 + 1), "larger than"),
    ],
)
def test_hostile_documents_rejected_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(AdvertisementError, match=reason):
        parse_document(data, "server.oe.test", NOW)


def test_mode_none_may_pin_nothing() -> None:
    ad = advert(mode="none", pins=())
    parsed, _ = parse_document(ad.document_bytes(NOW + dt.timedelta(days=1)), "server.oe.test", NOW)
    assert parsed.mode == "none"


def test_duplicate_keys_are_found_in_linear_time_and_shown_quoted() -> None:
    # keys.count() per key: ~7,000 keys in 64 KiB cost half a second of CPU per hostile
    # document; and the keys, the peer's own text, went into the reason raw.
    import time

    many = b"{" + b",".join(b'"%x":1' % i for i in range(7000)) + b',"0":1}'
    started = time.monotonic()
    with pytest.raises(AdvertisementError, match="repeats the key"):
        parse_document(many, "server.oe.test", NOW)
    assert time.monotonic() - started < 0.2
    with pytest.raises(AdvertisementError) as info:
        parse_document(b'{"\\u001b]0;x\\u0007": 1, "\\u001b]0;x\\u0007": 2}', "server.oe.test", NOW)
    assert str(info.value).isprintable(), str(info.value)
