"""``discover --from-file``: a long, huge or endless file is read in bounded time and memory,
or refused with one clear error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from oeagent.discovery import MAX_PEERS_FILE, read_peer_file
from oeagent.errors import OeagentError


def test_the_largest_allowed_list_is_read_quickly_in_order(tmp_path: Path) -> None:
    # Duplicates were dropped with a list scan per line: 100,000 names took minutes.
    listing = tmp_path / "peers.txt"
    names = [f"h{i}.example.org" for i in range(MAX_PEERS_FILE)]
    listing.write_text("# peers\n" + "\n".join(names) + "\nh0.example.org  # again\n")
    started = time.monotonic()
    assert read_peer_file(listing) == names
    assert time.monotonic() - started < 10


def test_too_many_peers_are_refused_without_reading_them_all(tmp_path: Path) -> None:
    listing = tmp_path / "peers.txt"
    listing.write_text("".join(f"h{i}.example.org\n" for i in range(3 * MAX_PEERS_FILE)))
    started = time.monotonic()
    with pytest.raises(OeagentError, match=f"more than {MAX_PEERS_FILE} peers"):
        read_peer_file(listing)
    assert time.monotonic() - started < 10


def test_an_endless_file_is_refused(tmp_path: Path) -> None:
    # /dev/zero (or a FIFO someone keeps writing to) was read until memory ran out.
    with pytest.raises(OeagentError, match="larger than"):
        read_peer_file(Path("/dev/zero"))


def test_text_output_never_echoes_control_characters(tmp_path: Path) -> None:
    """A line with an escape sequence is refused as a peer, but its text row printed the
    peer raw: ESC ] 0 ; ... BEL retitled the operator's terminal, ESC [ 2 J cleared it."""
    import io

    from oeagent import config
    from oeagent.discovery import discover

    cfg = config.parse({"state_dir": str(tmp_path / "state"),
                        "host": {"names": ["a.example.org"]}}, tmp_path)
    out = io.StringIO()
    discover(cfg, ["\x1b]0;pwned\x07x.example.org", "a\x1b[2Jb.example.org"], out=out)
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text, text
    assert "'\\x1b]0;pwned\\x07x.example.org': invalid" in text, text


def test_a_huge_refused_line_is_shown_once_and_cut_short(tmp_path: Path) -> None:
    """A 1 MB --from-file line was echoed whole twice per row: as the peer and inside the
    reason. The row shows its first characters and its length; the JSON keeps it whole."""
    import io

    from oeagent import config
    from oeagent.discovery import discover

    cfg = config.parse({"host": {"names": ["a.example.org"]},
                        "state_dir": str(tmp_path / "state")}, tmp_path)
    huge = "a" * 1_000_000
    out = io.StringIO()
    discover(cfg, [huge], out=out)
    text = out.getvalue()
    assert len(text) < 400, len(text)
    assert text.startswith(f"{'a' * 64!r}... (1000000 characters): invalid")
    assert "not a name or address: it is longer than 253 characters" in text


def test_a_redirect_target_with_control_characters_is_quoted() -> None:
    """The Location header of a peer's redirect is the peer's text: shown in the reason (and
    so on the operator's terminal) with its control characters escaped."""
    from oeagent.wellknown_fetch import Response

    refusal = Response(302, "", "https://x.example/\x1b]0;pwned\x07\x1b[2J", b"").refusal()
    assert refusal is not None
    reason, _ = refusal
    assert reason.isprintable() and "\\x1b]0;pwned\\x07" in reason, reason
