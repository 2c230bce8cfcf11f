"""Property: whatever TOML-shaped data arrives, loading gives a Config or a ConfigError
whose every problem names a key path; never another exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from oeagent import config
from oeagent.errors import ConfigError

KEYS = ["state_dir", "lock_timeout", "host", "names", "addresses", "acme", "directory", "email",
        "agree_tos", "ca_bundle", "profile", "eab_kid", "eab_hmac_key_file", "key", "algorithm",
        "reuse", "challenge", "type", "http", "dns", "mode", "port", "webroot", "server",
        "zone", "tsig_secret_file", "nss", "database", "nickname", "trust_anchors", "pluto",
        "ctlsocket", "x", "unknown"]

scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True), st.text(max_size=40),
    st.sampled_from(["a.example", "192.0.2.1", "https://ca.example/dir", "http-01", "dns-01",
                     "sql:/tmp/x", "ecdsa-p256", "../../etc/passwd", "a\x00b", "ü.example"]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    ),
    max_leaves=20,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_any_document_gives_config_or_config_error(data: dict[str, Any]) -> None:
    try:
        config.parse(data, base_dir=Path("/nonexistent-oeagent-fuzz"))
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            key, sep, message = problem.partition(": ")
            assert sep and key and message, problem
            assert key.split(".")[0].split("[")[0] in KEYS, problem
