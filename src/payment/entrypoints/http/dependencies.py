"""What the routes need from the composition root, handed over through ``app.state``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from fastapi import Request

from payment.domain.messagebus import MessageBus
from payment.domain.ports import Clock, UnitOfWork
from payment.domain.services import DEFAULT_KEY_RETENTION
from payment.entrypoints.http.auth import ANONYMOUS_CALLER as ANONYMOUS_CALLER
from payment.entrypoints.http.auth import ApiKeys
from payment.entrypoints.http.observe import PoolReport


@dataclass(frozen=True, slots=True)
class Services:
    unit_of_work: Callable[[], UnitOfWork]
    """A new unit of work for each use case run."""
    clock: Clock
    database_ready: Callable[[], Awaitable[bool]]
    """True when the database answers now; for /readyz. Bounded in time, and never waits
    for a slot of the requests' pool."""
    key_retention: timedelta = field(default=DEFAULT_KEY_RETENTION)
    """How long an idempotency key and its answer are kept, at least."""
    api_keys: ApiKeys | None = None
    """The keys callers must present; None: no authentication."""
    pool_report: Callable[[], PoolReport] | None = None
    """The database pool's use now, for the metrics. Must not wait."""
    max_requests_in_flight: int | None = None
    """Requests in progress beyond which a new one is answered 503 at once (the probes and
    the metrics excepted); None: no limit."""
    bus: MessageBus | None = None
    """Where what a use case committed goes next (the decision's log fields and metric);
    None: nowhere."""


async def get_services(request: Request) -> Services:
    # async: a plain function would cost a hop to the thread pool for every request
    services: Services = request.app.state.services
    return services


def caller_of(request: Request) -> str:
    """Who is calling: the identity set by authentication, or the anonymous caller."""
    caller: str = getattr(request.state, "caller", None) or ANONYMOUS_CALLER
    return caller
