"""What the routes need from the composition root, handed over through ``app.state``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from payment.domain.ports import Clock, UnitOfWork


@dataclass(frozen=True, slots=True)
class Services:
    unit_of_work: Callable[[], UnitOfWork]
    """A new unit of work for each use case run."""
    clock: Clock
    database_ready: Callable[[], bool]
    """True when the database answers now; for /readyz."""


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services
