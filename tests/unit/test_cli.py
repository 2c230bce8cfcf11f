"""The command line surface: every command has --help, reserved ones say so, JSON output."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from oeagent import cli

COMMANDS = ["enroll", "renew", "run", "status", "install-units", "publish", "discover", "policy",
            "unenroll", "serve"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"oeagent {command}" in out
    assert "--config" in out and "--json" in out and "--debug" in out


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


def test_json_error_output_is_one_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.toml"
    assert cli.main(["enroll", "--json", "--config", str(missing)]) == 78
    document = json.loads(capsys.readouterr().out)
    assert document["command"] == "enroll" and document["ok"] is False
    assert "file not found" in document["error"] and document["exit_code"] == 78


def test_global_options_before_or_after_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "x.toml")
    assert cli.main(["--json", "--config", missing, "enroll"]) == 78
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_dry_run_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "oeagent.toml"
    state = tmp_path / "state"
    cfg.write_text(f'state_dir = "{state}"\n[host]\nnames = ["a.example"]\n[nss]\ndatabase = "sql:{tmp_path}/nss"\n')
    assert cli.main(["enroll", "--dry-run", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "would request a certificate for a.example" in out
    assert not state.exists() and not (tmp_path / "nss").exists()


def test_help_does_not_import_the_acme_stack() -> None:
    code = "import sys\nfrom oeagent import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\nprint('acme' in sys.modules, 'requests' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_publish_without_backends_says_how_to_configure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "oeagent.toml"
    cfg.write_text(f'state_dir = "{tmp_path}/state"\n[host]\nnames = ["a.example"]\n')
    assert cli.main(["publish", "--dry-run", "--config", str(cfg)]) == 78
    assert "publish.backends" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_publish_dry_run_and_verify_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["publish", "--dry-run", "--verify"])
    assert info.value.code == 2


@pytest.mark.parametrize("port", ["70000", "-1", "0x50", "eighty"])
def test_serve_port_out_of_range_is_a_usage_error(port: str, capsys: pytest.CaptureFixture[str]
                                                   ) -> None:
    # --port 70000 reached bind() and came back as an internal error (OverflowError, exit 70).
    with pytest.raises(SystemExit) as info:
        cli.main(["serve", "--port", port])
    assert info.value.code == 2
    assert "--port" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--json", "serve", "--port", "x"],
                                  ["discover", "--json", "--bogus"],
                                  ["--json", "no-such-command"]])
def test_usage_errors_with_json_are_one_json_object(argv: list[str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # argparse wrote only its usage text on stderr: a script reading --json got nothing.
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["ok"] is False and document["exit_code"] == 2
    assert document["error"] and document["error"] in captured.err


@pytest.mark.parametrize("argv", [["install-units", "--directory", ""],
                                  ["serve", "--listen", " "],
                                  ["discover", "--from-file", ""]])
def test_an_empty_option_value_is_a_usage_error(argv: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # "$UNSET": --directory "" wrote the units into the current directory, --listen "" took
    # the configured address as if the option were not there.
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "is empty" in capsys.readouterr().err


def test_acme_stack_without_dns01_does_not_import_dnspython() -> None:
    # dnspython is only for dns-01: an http-01 enrollment does not pay for its imports.
    code = "import sys\nimport oeagent.enroll, oeagent.ca\nprint('dns' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _readme_commands() -> dict[str, set[str]]:
    """README's "Commands" table: each command and the options its first cell shows."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `oeagent ([a-z-]+)([^`]*)` \|", section, re.MULTILINE)
    return {command: set(re.findall(r"--[a-z-]+", rest)) for command, rest in rows}


def test_readme_commands_table_matches_the_parser() -> None:
    subparsers = next(a for a in cli.build_parser()._actions
                      if isinstance(a, argparse._SubParsersAction))
    global_options = {"--help", "--config", "--json", "--debug"}
    actual = {
        command: {o for a in sub._actions for o in a.option_strings if o.startswith("--")}
        - global_options
        for command, sub in subparsers.choices.items()
    }
    assert _readme_commands() == actual
    assert sorted(actual) == sorted(COMMANDS)
