"""The README's fault matrix is generated from the tests, so it cannot drift.

``python -m tests.faults.test_matrix`` prints the table; the test below requires the README
to hold exactly that between its fault-matrix markers, and every test it names to exist.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.faults import (  # noqa: F401  (importing registers their faults)
    test_bind_killed,
    test_ca_errors,
    test_ca_faults,
    test_clock_faults,
    test_dns_faults,
    test_eab,
    test_hostile_dns,
    test_hostile_input,
    test_https_faults,
    test_local_faults,
    test_nss_password,
)
from tests.faults.harness import MATRIX, Fault

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BEGIN, END = "<!-- fault-matrix:begin -->", "<!-- fault-matrix:end -->"

# Faults covered by tests that predate tests/faults (kept where they are, listed here).
EARLIER = [
    Fault("CA down at start", "enroll", "exit 69 naming the unreachable CA",
          "integration/test_enroll_faults.py::test_ca_down_is_a_clear_error"),
    Fault("CA's HTTPS certificate untrusted", "enroll",
          "exit 69: not trusted, names acme.ca_bundle; verification never disabled",
          "integration/test_enroll_faults.py::test_untrusted_ca_certificate_is_refused_not_ignored"),
    Fault("SIGKILL at each step of enroll (6 points)", "enroll --force",
          "one certificate with its key stays in NSS; rerun converges",
          "integration/test_enroll_faults.py::test_sigkill_at_each_step_then_rerun_converges", 6),
    Fault("crash at each point of the NSS swap (5 points)", "(NSS swap)",
          "the journal lets the next run finish or undo the swap",
          "unit/test_nss.py::test_recover_after_crash", 5),
    Fault("NSS database read-only (swap)", "(NSS swap)", "refused before any change",
          "unit/test_nss.py::test_read_only_database_is_left_alone"),
    Fault("pk12util rejects the PKCS#12", "(NSS swap)", "rolled back to the working certificate",
          "unit/test_nss.py::test_rollback_when_pk12util_rejects"),
    Fault("CA down during renewals (agent)", "run", "working certificate kept, backoff, recovers",
          "renewal/test_agent.py::test_ca_down_keeps_working_certificate_backs_off_then_recovers"),
    Fault("SIGTERM in the middle of a renewal", "run", "abandoned cleanly; restart converges",
          "renewal/test_agent.py::test_sigterm_mid_renewal_abandons_cleanly_and_restart_converges"),
    Fault("SIGTERM during the NSS swap", "run", "the swap and its record finish first",
          "renewal/test_agent.py::test_sigterm_during_the_nss_swap_lets_it_finish"),
    Fault("wrong TSIG key, refused zone, DNS server down", "publish",
          "exit 69 (BADSIG / REFUSED / cannot query); nothing half-published; secret not shown",
          "integration/test_publish.py::test_dns_failures_are_clear_and_nothing_is_half_published",
          3),
    Fault("a reverse zone refuses the update", "publish",
          "the forward zone's update is undone", "integration/test_publish.py::"
          "test_a_refused_reverse_zone_undoes_the_forward_zone"),
    Fault("pluto rejects the generated configuration", "policy",
          "the previous policy is restored and loaded; exit 1",
          "integration/test_policy.py::test_pluto_refusal_restores_the_previous_policy"),
    Fault("pluto not running", "policy",
          "files installed, exit 0; pluto started afterwards loads every conn",
          "integration/test_policy_converges.py::test_pluto_not_running_then_started_loads_the_policy"),
    Fault("SIGKILL after the files are written, before pluto loads them", "policy",
          "the rerun finds the files unchanged but pluto lacking conns, and reloads them",
          "integration/test_policy_converges.py::test_killed_before_loading_the_rerun_converges"),
    Fault("pluto does not answer in time while loading", "policy",
          "exit 1; the previous policy files are restored; the rerun converges",
          "integration/test_policy_converges.py::test_load_timeout_restores_the_previous_files"),
    Fault("hostile HTTPS documents (discovery)", "discover", "invalid, with the reason",
          "integration/test_discovery.py::test_hostile_https_documents_are_rejected_with_their_reason"),
    Fault("any TOML document (hypothesis)", "(config)", "a Config or a ConfigError, never a traceback",
          "unit/test_config_fuzz.py::test_any_document_gives_config_or_config_error"),
]


def rows() -> list[Fault]:
    # By file (stable: a file's rows in definition order), not by import order, which
    # depends on which test files pytest was given first.
    return [*sorted(MATRIX, key=lambda f: f.test.split("::")[0]), *EARLIER]


def table() -> str:
    faults = rows()
    cases = sum(f.cases for f in faults)
    lines = [f"{len(faults)} kinds of fault, {cases} injected cases; each row is a test that "
             "fails unless the fault is survived (the table is generated by "
             "`python -m tests.faults.test_matrix`, and `tests/faults/test_matrix.py` keeps it "
             "equal to the tests).", "",
             "| fault | command | expected behaviour | test |", "|---|---|---|---|"]
    for f in faults:
        count = f" (x{f.cases})" if f.cases > 1 else ""
        lines.append(f"| {f.fault} | `{f.command}` | {f.expected} | `{f.test}`{count} |")
    return "\n".join(lines)


def test_readme_matrix_is_the_generated_one() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text, "README lacks the fault-matrix markers"
    current = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert current == table(), "README fault matrix is stale: run python -m tests.faults.test_matrix"


def named_test_problem(test: str) -> str | None:
    """Why ``test`` (``path::name``) is not a test pytest collects, or None if it is.

    A fixture, helper or class named in the matrix would make a row look tested when no
    test asserts it: only a module-level ``test_`` function in a ``test_*.py`` file counts.
    """
    path, _, name = test.split(" ", 1)[0].partition("::")
    if not Path(path).name.startswith("test_") or not name.startswith("test_"):
        return f"{test}: not a test (pytest collects test_*.py::test_*)"
    file = REPO / "tests" / path
    if not file.is_file():
        return f"{test}: no such file"
    if not re.search(rf"^(async )?def {re.escape(name)}\(", file.read_text(), re.M):
        return f"{test}: no such test function"
    return None


def test_every_named_test_exists() -> None:
    problems = [p for f in rows() if (p := named_test_problem(f.test))]
    assert not problems, problems


def test_a_fixture_or_helper_is_not_accepted_as_a_test() -> None:
    assert named_test_problem("faults/conftest.py::host") is not None
    assert named_test_problem("faults/harness.py::survived") is not None
    assert named_test_problem("faults/test_local_faults.py::_policy_change") is not None
    assert named_test_problem("faults/test_local_faults.py::test_no_such_thing") is not None
    assert named_test_problem("faults/test_local_faults.py::test_ipsec_dir_full") is None


if __name__ == "__main__":
    print(table())
