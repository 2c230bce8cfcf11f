"""One order, from newOrder to the downloaded chain (RFC 8555 §7.4).

The library's ``poll_and_finalize`` is not used: it sleeps 1 s between polls (see
``polling``) and reports failures as exceptions that need unpacking. Here every step uses
the public ``ClientV2`` calls, our own polling, and errors that name the identifier.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from acme import challenges, messages
from acme import client as acme_client
from josepy.jwk import JWK

from oeagent.ca import http01
from oeagent.ca.client import post_as_get, problem_text, translated
from oeagent.ca.polling import poll_until
from oeagent.config import ChallengeConfig
from oeagent.errors import AcmeError, ChallengeError
from oeagent.report import Reporter
from oeagent.state import StateDir

_WAITING = (messages.STATUS_PENDING, messages.STATUS_PROCESSING)


@dataclass(frozen=True)
class Task:
    """One pending authorization and the challenge we answer for it."""

    authzr: messages.AuthorizationResource
    challb: messages.ChallengeBody
    identifier: str
    response: challenges.ChallengeResponse
    validation: str  # http-01: the key authorization; dns-01: the TXT value


def choose_profile(wanted: str | None, directory: messages.Directory,
                   reporter: Reporter) -> str | None:
    if not wanted:
        return None
    offered = directory.meta.profiles or {}
    if not offered:
        reporter.step("profile", f"warning: the CA offers no profiles; acme.profile = {wanted!r} "
                      "is ignored and the CA's default applies", level="warning")
        return None
    if wanted not in offered:
        listed = ", ".join(f"{name} ({desc})" if desc else name for name, desc in offered.items())
        raise AcmeError(f"acme.profile {wanted!r} is not offered by the CA; it offers: {listed}")
    return wanted


def identifier_text(authzr: messages.AuthorizationResource) -> str:
    ident = authzr.body.identifier
    return str(ident.value) if ident is not None else authzr.uri


def tasks_for(orderr: messages.OrderResource, challenge_type: str, key: JWK) -> list[Task]:
    """The authorizations still to prove; already-valid ones (authz reuse) need nothing."""
    kind = {"http-01": challenges.HTTP01, "dns-01": challenges.DNS01}[challenge_type]
    tasks = []
    for authzr in orderr.authorizations:
        status, who = authzr.body.status, identifier_text(authzr)
        if status == messages.STATUS_VALID:
            continue
        if status != messages.STATUS_PENDING:
            raise ChallengeError(f"the authorization for {who} is {status} at the CA")
        found = [c for c in authzr.body.challenges if isinstance(c.chall, kind)]
        if not found:
            offered = ", ".join(sorted(str(c.chall.typ) for c in authzr.body.challenges))
            raise ChallengeError(f"the CA offers no {challenge_type} challenge for {who} "
                                 f"(it offers: {offered or 'none'}); change challenge.type")
        challb = found[0]
        response, validation = challb.chall.response_and_validation(key)
        tasks.append(Task(authzr, challb, who, response, str(validation)))
    return tasks


@contextlib.contextmanager
def challenge_setup(config: ChallengeConfig, tasks: list[Task],
                    reporter: Reporter, state: StateDir | None = None) -> Iterator[None]:
    """Make every task's challenge answerable for the duration of the block."""
    if config.type == "dns-01":
        records: dict[str, set[str]] = {}
        for task in tasks:
            assert isinstance(task.challb.chall, challenges.DNS01)
            owner = task.challb.chall.validation_domain_name(task.identifier)
            records.setdefault(owner, set()).add(task.validation)
        # dnspython (~50 ms of imports) only when dns-01 is configured.
        from oeagent.ca import dns01

        with dns01.published(config.dns, records, reporter, state):
            yield
        return
    answers = {task.challb.chall.encode("token"): task.validation for task in tasks}
    names = [t.identifier for t in tasks]
    if config.http.mode == "webroot":
        assert config.http.webroot is not None
        with http01.webroot(config.http.webroot, answers):
            for name in names:
                reporter.step("challenge", f"http-01 file for {name} written under "
                              f"{config.http.webroot}", identifier=name)
            yield
        reporter.step("cleanup", "removed the http-01 files", identifiers=names)
    else:
        with http01.standalone(config.http, answers) as port:
            for name in names:
                reporter.step("challenge", f"http-01 answer for {name} served on "
                              f"{config.http.listen_address} port {port}", identifier=name)
            yield
        reporter.step("cleanup", "stopped the http-01 responder", identifiers=names)


def answer_and_wait(client: acme_client.ClientV2, tasks: list[Task], deadline: float,
                    reporter: Reporter, challenge_type: str) -> None:
    for task in tasks:
        with translated(f"start {challenge_type} validation of {task.identifier}", task.challb.uri):
            client.answer_challenge(task.challb, task.response)
    current = {task.authzr.uri: task.authzr for task in tasks}

    def fetch() -> tuple[list[messages.AuthorizationResource], str | None]:
        retry_after = None
        for uri, authzr in current.items():
            if authzr.body.status in _WAITING:
                with translated(f"poll the authorization of {identifier_text(authzr)}", uri):
                    current[uri], response = client.poll(authzr)
                retry_after = response.headers.get("Retry-After") or retry_after
        return list(current.values()), retry_after

    def pending(authzrs: list[messages.AuthorizationResource]) -> str:
        waiting = [identifier_text(a) for a in authzrs if a.body.status in _WAITING]
        return f"{challenge_type} validation of {', '.join(waiting)} still pending"

    final = poll_until(fetch, lambda a: not any(x.body.status in _WAITING for x in a),
                       deadline, pending)
    for authzr in final:
        who = identifier_text(authzr)
        if authzr.body.status != messages.STATUS_VALID:
            raise ChallengeError(f"{challenge_type} validation of {who} failed: "
                                 f"{_authz_problem(authzr)}")
        reporter.step("validated", f"the CA validated {who}", identifier=who)


def _authz_problem(authzr: messages.AuthorizationResource) -> str:
    for challb in authzr.body.challenges:
        if challb.error is not None:
            return f"the CA said: {problem_text(challb.error)}"
    return f"the authorization is {authzr.body.status} (the CA gave no reason)"


def finalize_and_download(client: acme_client.ClientV2, orderr: messages.OrderResource,
                          deadline: float, reporter: Reporter) -> str:
    """Send the CSR, wait for issuance, and return the PEM chain."""
    with translated("finalize the order", orderr.body.finalize):
        orderr = client.begin_finalization(orderr)
    reporter.step("finalized", "sent the CSR to the CA", order=orderr.uri)

    def fetch() -> tuple[messages.Order, str | None]:
        with translated("poll the order", orderr.uri):
            response = post_as_get(client, orderr.uri)
            return messages.Order.from_json(response.json()), response.headers.get("Retry-After")

    body = orderr.body
    if body.status != messages.STATUS_VALID:
        body = poll_until(fetch, lambda b: b.status not in (*_WAITING, messages.STATUS_READY),
                          deadline, lambda b: f"the order is still {b.status}")
    if body.status != messages.STATUS_VALID or not body.certificate:
        why = problem_text(body.error) if body.error is not None else "no reason given"
        raise AcmeError(f"the CA did not issue the certificate: order {body.status}: {why}")
    with translated("download the certificate", body.certificate):
        return post_as_get(client, body.certificate).text


def order_deadline(timeout: float) -> float:
    return time.monotonic() + timeout
