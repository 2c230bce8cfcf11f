"""The publishing contract every backend implements: plan, apply, verify, withdraw.

Shaped after octoDNS: ``plan(desired)`` compares what should be published with what is
published now and returns a ``Plan`` (a diff a human can read, plus the backend's own data);
the public ``apply(plan)`` honours an empty plan and retries when the world changed under
the plan (a lost compare-and-swap), calling the backend's ``_apply``. ``plan(None)`` plans
the withdrawal of everything the backend holds; ``withdraw()`` applies it.
"""

from __future__ import annotations

import abc
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from oeagent import keys
from oeagent.advertisement import Advertisement
from oeagent.errors import OeagentError

log = logging.getLogger(__name__)

APPLY_ATTEMPTS = 4


class PublishError(OeagentError):
    """A backend could not publish, verify or withdraw."""

    exit_code = 69  # EX_UNAVAILABLE: the DNS server or web root said no


class StalePlan(OeagentError):
    """The published state changed between plan and apply; plan again."""


@dataclass(frozen=True)
class Desired:
    """What should be published: the advertisement, the keys behind its pins, its expiry."""

    advert: Advertisement
    public_keys: tuple[keys.PublicKey, ...]
    expires: dt.datetime


@dataclass(frozen=True)
class Diff:
    action: str  # "+" publish, "-" withdraw
    where: str
    value: str

    def __str__(self) -> str:
        return f"{self.action} {self.where} {self.value}"


@dataclass
class Plan:
    backend: str
    desired: Desired | None
    """None: withdraw everything this backend holds."""
    diffs: list[Diff] = field(default_factory=list)
    detail: Any = None
    """The backend's own data for ``_apply`` (what it read, what it will send)."""
    attempts: int = 0
    """How many times ``apply`` sent it (more than one: it re-planned after a lost race)."""

    @property
    def empty(self) -> bool:
        return not self.diffs

    def text(self) -> str:
        if self.empty:
            return f"{self.backend}: no changes"
        return "\n".join([f"{self.backend}:", *(f"  {d}" for d in self.diffs)])


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str


@dataclass
class Verification:
    backend: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "ok": self.ok,
                "checks": [{"what": c.what, "ok": c.ok, "detail": c.detail} for c in self.checks]}


class Backend(abc.ABC):
    """One way of publishing the advertisement. Subclasses set ``name`` and implement the
    abstract methods; they never change anything in ``plan`` or ``verify``."""

    name: ClassVar[str]
    carries_dns: ClassVar[bool] = False
    """True when the backend publishes DNS records (rollover then waits two TTLs)."""

    @abc.abstractmethod
    def plan(self, desired: Desired | None) -> Plan:
        """Compare ``desired`` (None: nothing) with what is published now; change nothing."""

    @abc.abstractmethod
    def _apply(self, plan: Plan) -> None:
        """Make the change; raise StalePlan if what ``plan`` was computed from changed."""

    @abc.abstractmethod
    def verify(self, desired: Desired | None, timeout: float) -> Verification:
        """Check from the outside that ``desired`` (None: nothing) is what clients see."""

    def apply(self, plan: Plan) -> Plan:
        """Apply ``plan``; when it went stale, plan again from fresh reads and retry.

        Returns the plan that was finally applied (its ``attempts`` says how many sends).
        """
        attempts = 0
        while True:
            if plan.empty:
                plan.attempts = attempts
                return plan
            attempts += 1
            try:
                self._apply(plan)
            except StalePlan as exc:
                if attempts >= APPLY_ATTEMPTS:
                    raise PublishError(f"{self.name}: the published records kept changing "
                                       f"while we updated them ({attempts} attempts): {exc}"
                                       ) from None
                log.info("%s: plan went stale (%s); planning again", self.name, exc)
                plan = self.plan(plan.desired)
                continue
            plan.attempts = attempts
            return plan

    def withdraw(self) -> Plan:
        return self.apply(self.plan(None))
