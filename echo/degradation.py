"""The one way a component reports that it is degraded, and that it has recovered.

A long-lived component (the work pool, the subscriber, the workflow agent, the outbox
relay, the LISTEN connection) meets failures it waits out instead of dying of them: the
database is away, Redis is down. Each holds one `Condition` and calls `trouble(reason)`
on a failure and `ok()` after a success. The condition logs the change once (not once
per retry) and pushes it to a `Reporter`: in an agent, its `HealthMonitor`, which makes
the agent `degraded` with the reasons and `healthy` again once every component is ok.
Nothing polls a component to learn its state, so reading an agent's stats changes
nothing.

Run alone (a CLI worker, a test) a component reports to nobody; its condition still
logs and still answers `degraded` and `last_error` for its metrics.
"""

from __future__ import annotations

import logging
from typing import Protocol

__all__ = ["Condition", "Reporter"]


class Reporter(Protocol):
    """Where conditions are pushed: `echo.org.health.HealthMonitor` is one."""

    def problem(self, component: str, reason: str) -> None: ...

    def resolved(self, component: str) -> None: ...


class Condition:
    """One component's health, as it reports it."""

    __slots__ = ("component", "degraded", "last_error", "log", "reporter")

    def __init__(self, component: str, reporter: Reporter | None = None,
                 log: logging.Logger | None = None) -> None:
        self.component = component
        self.reporter = reporter
        self.log = log or logging.getLogger(__name__)
        self.degraded = False
        self.last_error: str | None = None

    def trouble(self, reason: str) -> None:
        """Something this component needs failed; it goes on, degraded."""
        if not self.degraded:
            self.log.warning("%s degraded: %s", self.component, reason)
        self.degraded = True
        self.last_error = reason
        if self.reporter is not None:
            self.reporter.problem(self.component, reason)

    def ok(self) -> None:
        """It works again (or still does): cheap to call after every success."""
        if self.degraded:
            self.log.warning("%s recovered", self.component)
            self.degraded = False
            self.last_error = None
            if self.reporter is not None:
                self.reporter.resolved(self.component)
