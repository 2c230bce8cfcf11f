"""The config loader: typed values, defaults, and every problem reported at once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from oeagent import config
from oeagent.config.reader import _Reader
from oeagent.config.sections import _build
from oeagent.errors import EX_CONFIG, ConfigError

REPO = Path(__file__).resolve().parents[2]
# Giving a file to another user (chown) takes root; the suite runs as root (make test).
NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
SECRET_B64 = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ="


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "oeagent.toml"
    path.write_text(text)
    return path


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, 'host.names = ["VPN.Example.org."]\n'))
    assert cfg.host.names == ("vpn.example.org",)
    assert cfg.state_dir == Path("/var/lib/oeagent")
    assert cfg.acme.directory == config.LETSENCRYPT_DIRECTORY
    assert cfg.key.algorithm == "ecdsa-p256" and cfg.key.reuse is True
    assert cfg.challenge.type == "http-01"
    assert cfg.challenge.dns.tsig_algorithm == "hmac-sha256"
    assert cfg.nss.database == "sql:/var/lib/ipsec/nss"
    assert cfg.nss.trust_anchors == "letsencrypt"
    assert cfg.pluto.config == Path("/etc/ipsec.conf")


def test_pluto_config_is_a_path_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, 'host.names = ["a.example"]\n'
                                      '[pluto]\nconfig = "ipsec/ipsec.conf"\n'))
    assert cfg.pluto.config == tmp_path / "ipsec" / "ipsec.conf"


def test_shipped_example_loads(tmp_path: Path) -> None:
    cfg = config.load(REPO / "examples" / "oeagent.toml")
    assert cfg.host.names == ("vpn.example.org",)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        state_dir = 5
        colour = "blue"
        [host]
        names = ["ok.example.org", "bad name", 7]
        addresses = ["192.0.2.300"]
        [acme]
        directory = "http://ca.example/dir"
        agree_tos = "yes"
        eab_kid = "kid"
        [key]
        algorithm = "dsa-1024"
        [challenge]
        type = "tls-alpn-01"
        [challenge.http]
        port = 70000
        [challenge.dns]
        tsig_algorithm = "hmac-sha1"
        [nss]
        nickname = "bad nick;rm -rf"
        database = "dbm:/etc/ipsec.d"
        [pluto]
        typo = 1
        """,
    )
    with pytest.raises(ConfigError) as info:
        config.load(path)
    problems = "\n".join(info.value.problems)
    for key in (
        "state_dir:",
        "colour: unknown key",
        "host.names[1]:",
        "host.names[2]: must be a string",
        "host.addresses[0]:",
        "acme.directory: must be an https:// URL",
        "acme.agree_tos: must be true or false",
        "acme.eab_kid:",
        "key.algorithm:",
        "challenge.type:",
        "challenge.http.port: must be between 1 and 65535",
        "challenge.dns.tsig_algorithm:",
        "nss.nickname:",
        "nss.database:",
        "pluto.typo: unknown key",
    ):
        assert key in problems, f"{key!r} missing from:\n{problems}"
    assert len(info.value.problems) == 15
    assert info.value.exit_code == EX_CONFIG


def test_missing_required_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, "[acme]\nagree_tos = true\n"))
    assert info.value.problems == ["host.names: is required: the certificate needs at least one FQDN"]
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "nope.toml")


def test_toml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "host.names = [\n"))


@pytest.mark.parametrize("value", ["[" * 2000 + "]" * 2000, "{x = " * 2000 + "1" + "}" * 2000])
def test_deeply_nested_toml_is_a_config_error(tmp_path: Path, value: str) -> None:
    # tomllib parses nesting by recursion: a few hundred levels raised RecursionError,
    # which the CLI reported as an internal error (exit 70) instead of a config problem.
    with pytest.raises(ConfigError, match="nested too deeply"):
        config.load(write(tmp_path, f'host.names = ["a.example"]\nx = {value}\n'))


def test_empty_paths_and_secret_files_are_problems(tmp_path: Path) -> None:
    # "" used to mean "the default": state_dir = "" ran in /var/lib/oeagent, and dns-01 with
    # tsig_secret_file = "" passed the check that it is set, to fail at the first update.
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, 'state_dir = ""\nhost.names = ["a.example"]\n'
                          'pluto.ipsec_dir = " "\nchallenge.type = "dns-01"\n'
                          'challenge.dns.tsig_secret_file = ""\n'))
    assert info.value.problems == [
        "challenge.dns.tsig_secret_file: is empty; leave the key out to use the default",
        "pluto.ipsec_dir: is empty; leave the key out to use the default",
        "state_dir: is empty; leave the key out to use the default",
    ]


def test_byte_order_mark_and_bad_bytes_are_named(tmp_path: Path) -> None:
    # tomllib said only "Invalid statement (at line 1, column 1)" for a BOM (Notepad writes
    # one), and a Latin-1 byte was "not valid UTF-8" with no hint where.
    path = tmp_path / "oeagent.toml"
    path.write_bytes(b'\xef\xbb\xbfhost.names = ["a.example"]\n')
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.problems == ["starts with a byte order mark (U+FEFF); save it as UTF-8 "
                                   "without one"]
    path.write_bytes(b'host.names = ["a.example"]\n# caf\xe9\n')
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.problems == ["not valid UTF-8: line 2, byte 0xe9"]


def test_an_endless_config_file_is_refused() -> None:
    # read_bytes() on /dev/zero (or a FIFO that never ends) read until memory ran out.
    with pytest.raises(ConfigError, match="larger than"):
        config.load(Path("/dev/zero"))


@pytest.mark.parametrize(("url", "why"), [
    ("https://[::1/dir", "not a URL"),
    ("https://a..example/dir", "invalid label"),
    ("https://a b/dir", "space"),
    ("https:///dir", "names no host"),
    ("https://ca.example:99999/dir", "not a URL"),
    ("https://user@ca.example/dir", "user name"),
    ("https://ca.example/dir\n", "space or control character"),
])
def test_acme_directory_must_name_a_usable_host(tmp_path: Path, url: str, why: str) -> None:
    # Only the https:// prefix was checked: policy took the host apart later and exited 70
    # (ValueError: Invalid IPv6 URL, dns.name.EmptyLabel).
    with pytest.raises(ConfigError) as info:
        config.parse({"host": {"names": ["a.example"]}, "acme": {"directory": url}}, tmp_path)
    [problem] = info.value.problems
    assert problem.startswith("acme.directory: ") and why in problem, problem


@pytest.mark.parametrize("url", ["https://127.0.0.1:14000/dir", "https://[::1]:14000/dir",
                                 "https://acme-v02.api.letsencrypt.org/directory",
                                 "https://CA.Example./dir?x=1"])
def test_acme_directory_urls_that_work(tmp_path: Path, url: str) -> None:
    cfg = config.parse({"host": {"names": ["a.example"]}, "acme": {"directory": url}}, tmp_path)
    assert cfg.acme.directory == url


def test_a_config_others_can_write_is_refused(tmp_path: Path) -> None:
    # It names the commands oeagent runs as root after every deploy (hooks.post_deploy) and
    # where it writes: any local user who can write it owns the host.
    path = write(tmp_path, 'host.names = ["a.example"]\n')
    for mode in (0o666, 0o664):  # group-writable too, as for the hook programs
        path.chmod(mode)
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert info.value.problems == [
            f"writable by group or others (mode {mode:04o}); it names the commands oeagent "
            f"runs as root: run chmod go-w {path}"]
    path.chmod(0o644)
    assert config.load(path).host.names == ("a.example",)


def test_a_path_starting_with_a_tilde_is_refused(tmp_path: Path) -> None:
    # Taken as relative to the config file: state_dir = "~/oeagent" made a directory
    # literally named "~" next to /etc/oeagent/oeagent.toml.
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, 'state_dir = "~/oeagent"\nhost.names = ["a.example"]\n'
                          'nss.database = "sql:~root/nss"\n'
                          'challenge.dns.tsig_secret_file = "~/tsig.key"\n'))
    problems = "\n".join(info.value.problems)
    for key in ("state_dir", "nss.database", "challenge.dns.tsig_secret_file"):
        assert f"{key}: " in problems, problems
    assert problems.count("'~', which is not expanded") == 3, problems


def test_boolean_is_not_a_number(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lock_timeout: must be a number, not a boolean"):
        config.load(write(tmp_path, 'lock_timeout = true\nhost.names = ["a.example"]\n'))


def test_relative_paths_resolve_next_to_config(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, 'state_dir = "state"\nhost.names = ["a.example"]\n[nss]\ndatabase = "sql:nss"\n'))
    assert cfg.state_dir == tmp_path.resolve() / "state"
    assert cfg.nss.database == f"sql:{tmp_path.resolve() / 'nss'}"


def test_dns01_needs_secret_and_refuses_ip_identifiers(tmp_path: Path) -> None:
    path = write(tmp_path, 'host.names = ["a.example"]\nhost.addresses = ["192.0.2.1"]\nchallenge.type = "dns-01"\n')
    with pytest.raises(ConfigError) as info:
        config.load(path)
    text = "\n".join(info.value.problems)
    assert "challenge.dns.tsig_secret_file: is required" in text
    assert "host.addresses: IP identifiers can only be validated with http-01" in text


def test_secret_file_loaded_and_hidden(tmp_path: Path) -> None:
    secret = tmp_path / "tsig.key"
    secret.write_text(f'key "oeagent" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET_B64}";\n}};\n')
    secret.chmod(0o600)
    cfg = config.load(write(tmp_path, 'host.names = ["a.example"]\n[challenge]\ntype = "dns-01"\n'
                            '[challenge.dns]\ntsig_secret_file = "tsig.key"\n'))
    assert cfg.challenge.dns.tsig_secret is not None
    assert cfg.challenge.dns.tsig_secret.reveal().startswith(b"secret-secret")
    assert "secret-secret" not in repr(cfg)
    assert SECRET_B64 not in repr(cfg)


def _load_dns01_with_tsig_key(tmp_path: Path) -> config.Config:
    """A dns-01 config whose TSIG secret is ``tmp_path/tsig.key``, as the test left it."""
    return config.load(write(tmp_path, 'host.names = ["a.example"]\nchallenge.type = "dns-01"\n'
                             'challenge.dns.tsig_secret_file = "tsig.key"\n'))


def test_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "tsig.key"
    secret.write_text(SECRET_B64)
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by group or others \(mode 0644\)"):
        _load_dns01_with_tsig_key(tmp_path)


@NEEDS_ROOT
def test_a_config_another_user_owns_is_refused(tmp_path: Path) -> None:
    # Its owner may chmod it and rewrite it, whatever its mode says now.
    path = write(tmp_path, 'host.names = ["a.example"]\n')
    path.chmod(0o644)
    os.chown(path, 65534, -1)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.problems == [
        f"owned by uid 65534 (nobody) instead of root; it names the commands oeagent runs as root: "
        f"run chown root {path}"]
    os.chown(path, 0, -1)
    assert config.load(path).host.names == ("a.example",)


def test_a_config_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    # Anyone may rename a file of their own over it there, whatever the config's own mode.
    shared = tmp_path / "shared"
    shared.mkdir()
    path = write(shared, 'host.names = ["a.example"]\n')
    path.chmod(0o644)
    shared.chmod(0o777)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.problems == [
        f"in a directory others can write ({shared}, mode 0777, no sticky bit); it names the "
        f"commands oeagent runs as root: run chmod o-w {shared}"]
    # Reached through a symbolic link from a safe place: the link's target is what is read.
    link = tmp_path / "oeagent.toml"
    link.symlink_to(path)
    with pytest.raises(ConfigError, match=r"in a directory others can write"):
        config.load(link)
    # The sticky bit (as on /tmp) keeps others from replacing a file they do not own; a
    # directory only a group can write is let through (user private groups, umask 002).
    for mode in (0o1777, 0o775):
        shared.chmod(mode)
        assert config.load(path).host.names == ("a.example",)


def test_a_huge_secret_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    secret = tmp_path / "tsig.key"
    with secret.open("wb") as out:
        out.truncate(64 * 1024 + 1)  # sparse: its size is what is checked, not its content
    secret.chmod(0o600)
    with pytest.raises(ConfigError, match=r"is 65537 bytes: not a key file \(at most 65536\)"):
        _load_dns01_with_tsig_key(tmp_path)


def _hook_program(directory: Path, mode: int) -> Path:
    hook = directory / "reload-nginx"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(mode)
    return hook


def _hooks_config(*programs: Path) -> str:
    argvs = ", ".join(f'["{program}"]' for program in programs)
    return f'host.names = ["a.example"]\n[hooks]\npost_deploy = [{argvs}]\n'


def test_a_hook_program_others_can_write_is_refused(tmp_path: Path) -> None:
    # Hooks run as root after every deploy, like the commands a config names.
    hook = _hook_program(tmp_path, 0o757)
    text = (f'host.names = ["a.example"]\n[hooks]\npost_deploy = [["/bin/true"], '
            f'["{hook}", "--now"], ["/nonexistent/later"]]\n')
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text))
    assert info.value.problems == [
        f"hooks.post_deploy[1]: the program '{hook}' is writable by group or others (mode "
        f"0757) and would run as root; run: chmod go-w {hook}"]
    hook.chmod(0o755)
    assert len(config.load(write(tmp_path, text)).hooks.post_deploy) == 3


def test_a_hook_program_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "bin"
    shared.mkdir()
    hook = _hook_program(shared, 0o755)
    shared.chmod(0o757)
    text = _hooks_config(hook)
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text))
    assert info.value.problems == [
        f"hooks.post_deploy[0]: the program '{hook}' is in a directory others can write "
        f"({shared}, mode 0757, no sticky bit) and would run as root; run: chmod o-w {shared}"]
    shared.chmod(0o755)
    assert len(config.load(write(tmp_path, text)).hooks.post_deploy) == 1


@NEEDS_ROOT
def test_a_hook_program_another_user_owns_is_refused(tmp_path: Path) -> None:
    hook = _hook_program(tmp_path, 0o755)
    os.chown(hook, 65534, -1)
    text = _hooks_config(hook)
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text))
    assert info.value.problems == [
        f"hooks.post_deploy[0]: the program '{hook}' is owned by uid 65534 (nobody) instead "
        f"of root and would run as root; run: chown root {hook}"]
    os.chown(hook, 0, -1)
    assert len(config.load(write(tmp_path, text)).hooks.post_deploy) == 1


def test_secret_from_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "eab").write_text(SECRET_B64)
    (creds / "eab").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = config.load(write(tmp_path, 'host.names = ["a.example"]\nacme.eab_kid = "k"\nacme.eab_hmac_key_file = "eab"\n'))
    assert cfg.acme.eab_hmac_key is not None and cfg.acme.eab_hmac_key.source == creds / "eab"


def test_garbage_secret_is_not_echoed(tmp_path: Path) -> None:
    secret = tmp_path / "eab"
    secret.write_text("not base64 !!! hunter2")
    secret.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, 'host.names = ["a.example"]\nacme.eab_kid = "k"\nacme.eab_hmac_key_file = "eab"\n'))
    assert "hunter2" not in str(info.value)
    assert "does not hold a base64 secret" in str(info.value)


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OEAGENT_CONFIG", raising=False)
    assert config.config_path_from(None) == Path("/etc/oeagent/oeagent.toml")
    monkeypatch.setenv("OEAGENT_CONFIG", "/tmp/x.toml")
    assert config.config_path_from(None) == Path("/tmp/x.toml")
    assert config.config_path_from("/tmp/y.toml") == Path("/tmp/y.toml")


def test_an_empty_config_option_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # --config "$UNSET" silently read /etc/oeagent/oeagent.toml (or $OEAGENT_CONFIG).
    monkeypatch.setenv("OEAGENT_CONFIG", "/tmp/x.toml")
    with pytest.raises(ConfigError, match="--config is empty"):
        config.config_path_from("")


def test_cli_broken_config_exits_78_listing_all_problems(tmp_path: Path) -> None:
    path = write(tmp_path, 'colour = 1\n[host]\nnames = ["bad name"]\n')
    proc = subprocess.run(
        [sys.executable, "-m", "oeagent", "--config", str(path), "enroll"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False,
    )
    assert proc.returncode == 78
    assert "2 configuration problems" in proc.stderr
    assert "colour: unknown key" in proc.stderr and "host.names[0]" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_eab_key_in_base64url_is_accepted(tmp_path: Path) -> None:
    # CAs hand out EAB HMAC keys as unpadded base64url, with '-' and '_'.
    key = tmp_path / "eab"
    key.write_text("zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W\n".replace("G4", "-_"))
    key.chmod(0o600)
    cfg = config.load(write(tmp_path, 'host.names = ["a.example"]\nacme.eab_kid = "k"\nacme.eab_hmac_key_file = "eab"\n'))
    assert cfg.acme.eab_hmac_key is not None and len(cfg.acme.eab_hmac_key.reveal()) == 48


def _documented_keys() -> set[str]:
    """The key column of README's "Configuration reference" table; `.port` after
    `challenge.http.listen_address` means `challenge.http.port`."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Configuration reference\n", 1)[1].split("\n## ", 1)[0]
    keys: set[str] = set()
    for row in re.findall(r"^\| (`[^|]+) \|", section, re.MULTILINE):
        names = re.findall(r"`([^`]+)`", row)
        parent = names[0].rpartition(".")[0]
        keys.update(parent + name if name.startswith(".") else name for name in names)
    return keys


def _example_keys() -> set[str]:
    """Every key examples/oeagent.toml sets or shows commented out (`# key = value`)."""
    keys: set[str] = set()
    table = ""
    for line in (REPO / "examples" / "oeagent.toml").read_text().splitlines():
        if header := re.fullmatch(r"\[([a-z_.]+)\]", line):
            table = header.group(1) + "."
        elif key := re.match(r"(?:# )?([a-z_]+) = ", line):
            keys.add(table + key.group(1))
    return keys


def _keys_read(keys: set[str]) -> set[str]:
    """The keys the reader asks for when every one of ``keys`` is present (with a dummy
    value: type problems do not matter here, only which keys are read)."""
    data: dict[str, Any] = {}
    for key in keys:
        *tables, name = key.split(".")
        node = data
        for table in tables:
            node = node.setdefault(table, {})
        node[name] = "x"
    reader = _Reader(data, Path("/nonexistent"))
    _build(reader)
    tables_read = {t.path for t in reader.tables}
    return {t.key_path(k) for t in reader.tables for k in t.used} - tables_read


def test_readme_configuration_reference_lists_exactly_the_keys_the_reader_accepts() -> None:
    documented = _documented_keys()
    assert len(documented) > 80  # the parse found the table
    read = _keys_read(documented)
    assert sorted(read - documented) == []  # accepted, but not in README's table
    assert sorted(documented - read) == []  # in README's table, but an unknown key


def test_the_example_shows_every_key() -> None:
    # "examples/oeagent.toml is a commented copy of the whole reference"
    assert sorted(_example_keys() ^ _documented_keys()) == []


def test_the_example_values_are_the_defaults() -> None:
    # The example says "the value shown is the default".
    example = REPO / "examples" / "oeagent.toml"
    shown = config.load(example)
    defaults = config.parse({"host": {"names": list(shown.host.names)}},
                            base_dir=example.parent.resolve(), source=example)
    assert shown == defaults
