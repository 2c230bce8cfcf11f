"""policy.block is final: a discovered or configured peer inside it gets no conn.

In pluto an enforce peer's static conn beats the block shunt (traffic the operator blocked
would flow, encrypted), and a testing peer's one-address group ties with a /32 block (which
one applies is up to pluto). oeagent settles both before rendering.
"""

from __future__ import annotations

import pytest

from oeagent.policy import model

BLOCKED = "198.51.100.66"


@pytest.mark.parametrize("mode", ["enforce", "testing"])
@pytest.mark.parametrize("block", [f"{BLOCKED}/32", "198.51.100.64/26"])
def test_a_peer_inside_policy_block_gets_no_conn(mode: str, block: str) -> None:
    policy = model.build(
        null_ranges=["0.0.0.0/0"], clear=[], block=[block], never_locked_out=[], decisions=[],
        static_peers=[("blocked.oe.test", BLOCKED, "rsasig", mode),
                      ("open.oe.test", "198.51.100.7", "rsasig", mode)],
        responder=None)
    assert [p.fqdn for p in policy.peers] == ["open.oe.test"]
    assert f"blocked.oe.test: {BLOCKED} is in policy.block; blocked, no conn" in policy.notes
    assert policy.groups["oeagent-block"] == [block]


def test_a_never_locked_out_exception_inside_a_block_still_lets_the_peer_stay_clear() -> None:
    # The exception wins over the block (it is not rendered as blocked), and the peer inside
    # it gets no conn either way: the exception note, not the block note.
    policy = model.build(
        null_ranges=["0.0.0.0/0"], clear=[f"{BLOCKED}/32"], block=[f"{BLOCKED}/32"],
        never_locked_out=[], decisions=[],
        static_peers=[("blocked.oe.test", BLOCKED, "rsasig", "enforce")], responder=None)
    assert policy.peers == []
    assert any("never-locked-out exception" in n for n in policy.notes), policy.notes
