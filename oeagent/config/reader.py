"""Reading decoded TOML table by table, collecting every problem with its key path.

A ``_Table`` hands out typed values (text, numbers, durations, paths, secrets, lists) and
records a problem instead of raising, so one pass reports everything that is wrong; keys
nobody asked for are reported as unknown at the end.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from oeagent import names
from oeagent.secrets import Secret, read_secret

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

    def _nonempty(self, key: str) -> str | None:
        """A file name that must say something: "" is refused rather than taken as the
        default (``state_dir = ""`` from a template with an unset variable would otherwise
        run in /var/lib/oeagent), and so is a leading "~"."""
        value = self.text(key, None)
        if value is not None and not value.strip():
            self.reader.problem(self.key_path(key),
                                "is empty; leave the key out to use the default")
            return None
        if value is not None and value.startswith("~"):
            self.reader.problem(self.key_path(key), TILDE)
            return None
        return value

    def path_value(self, key: str, default: Path | None, must_exist: bool = False) -> Path | None:
        value = self._nonempty(key)
        if value is None:
            return default
        if "\x00" in value:
            self.reader.problem(self.key_path(key), "contains a NUL byte")
            return default
        resolved = Path(value) if os.path.isabs(value) else self.reader.base_dir / value
        if must_exist and not resolved.exists():
            self.reader.problem(self.key_path(key), f"file not found: {resolved}")
        return resolved

    def ca_bundle(self, key: str) -> Path | None:
        """A PEM file of CA certificates. Checked here, where the key is known: a directory
        or a file without certificates only failed later inside ssl, an internal error."""
        path = self.path_value(key, None, must_exist=True)
        if path is None or not path.exists():
            return path
        try:
            check_pem_bundle(path)
        except ValueError as exc:
            self.reader.problem(self.key_path(key), str(exc))
            return None
        return path

    def secret(self, key: str) -> Secret | None:
        value = self._nonempty(key)
        if value is None:
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


def check_pem_bundle(path: Path) -> None:
    """Raise ValueError unless ``path`` can be read and holds a PEM certificate: found out
    when the config is read, not later inside ssl or NSS (an internal error, or a failure
    right after a certificate was issued)."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in content:
        raise ValueError(f"{path} holds no PEM certificate")


TILDE = ("starts with '~', which is not expanded (it would name a directory '~' next to "
         "the config file); give the path in full")

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
    """An https:// URL whose host oeagent can use: the policy keeps that host reachable in
    clear, so a URL only requests could make sense of failed there (exit 70)."""
    if not value.startswith("https://"):
        if value.startswith("http://"):
            raise ValueError("must be an https:// URL (the ACME protocol requires TLS)")
        raise ValueError(f"{value!r} is not an https:// URL")
    if any(ord(c) <= 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{value!r} has a space or control character")
    try:
        parts = urllib.parse.urlsplit(value)
        host, _ = parts.hostname, parts.port  # .port raises for one out of range
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a URL: {exc}") from None
    if "@" in parts.netloc:
        raise ValueError(f"{value!r} has a user name; an ACME directory takes none")
    if not host:
        raise ValueError(f"{value!r} names no host")
    if names.could_be_ip(host):
        with contextlib.suppress(ValueError):
            names.normalize_ip(host)
            return value
    # A single label (a local CA at https://acme/...) is a host name here, not an error.
    single = "." not in host.rstrip(".")
    try:
        names.normalize_fqdn(f"{host}.invalid" if single else host)
    except ValueError as exc:
        raise ValueError(f"the host of {value!r} is not a host name"
                         + ("" if single else f": {exc}")) from None
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

