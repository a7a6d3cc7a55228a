"""The composition root: settings in, wired entrypoints out. HTTP, the relay and the command
line get their units of work, message bus, outbox and destinations (the publishers) here."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from importlib.metadata import version
from typing import TYPE_CHECKING

from fastapi import FastAPI

from payment.adapters.clock import SystemClock
from payment.adapters.decisions import DecisionCounter, count_decisions, log_decision
from payment.adapters.logging import configure_logging
from payment.adapters.settings import Settings, load_settings
from payment.adapters.sqlalchemy.engine import (
    PoolWatch,
    build_async_engine,
    direct_connector,
    session_settings,
)
from payment.adapters.sqlalchemy.outbox import SqlOutboxStore
from payment.adapters.sqlalchemy.readiness import ReadinessCheck
from payment.adapters.sqlalchemy.unit_of_work import OrderGate, SqlAlchemyUnitOfWork
from payment.adapters.tracing import trace_statements, tracing_from_environment
from payment.domain.delivery import Destination
from payment.domain.events import AttemptDecided, RefundDecided
from payment.domain.messagebus import MessageBus
from payment.entrypoints.http import Services, create_app
from payment.entrypoints.http.auth import ApiKeys
from payment.entrypoints.http.observe import Metrics

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

OUTBOX_STATEMENT_MARGIN_SECONDS = 2.0
"""An outbox statement is given up on this long after the database's own statement timeout
would have ended it."""


@dataclass(frozen=True, slots=True)
class OutboxAccess:
    """The outbox as the relay and the operator's commands reach it. ``dispose()`` the engine
    when done."""

    engine: AsyncEngine
    store: SqlOutboxStore
    """Claims, records, purges: bounded by the statement timeout."""
    ready_store: SqlOutboxStore
    """The same outbox for /readyz, bounded by PAYMENT_READY_TIMEOUT_MS."""


def outbox_access(settings: Settings, *, pool_size: int) -> OutboxAccess:
    """The outbox on an engine of its own with at most ``pool_size`` connections."""
    pooled = settings.model_copy(
        update={"payment_db_pool_size": min(settings.payment_db_pool_size, pool_size)}
    )
    engine = build_async_engine(pooled)
    session = session_settings(pooled)
    timeout = settings.payment_db_statement_timeout_ms / 1000 + OUTBOX_STATEMENT_MARGIN_SECONDS
    return OutboxAccess(
        engine=engine,
        store=SqlOutboxStore(engine, session=session, timeout=timeout),
        ready_store=SqlOutboxStore(
            engine, session=session, timeout=settings.payment_ready_timeout_ms / 1000
        ),
    )


def destinations(settings: Settings, *, console: bool = False) -> Sequence[Destination]:
    """Where the relay delivers: the configured webhook subscribers and RabbitMQ; with
    ``console``, standard output only (``payment-service dev``)."""
    from payment.adapters.destinations import ConsoleDestination, build_destinations

    if console:
        return [ConsoleDestination()]
    return build_destinations(settings)


def message_bus(metrics: DecisionCounter) -> MessageBus:
    """What follows a committed decision in the process: its log fields, and its count on
    ``metrics``. (Telling the shop is the outbox's work, in the commit itself.)"""
    bus = MessageBus()
    count = count_decisions(metrics)
    for decided in (AttemptDecided, RefundDecided):
        bus.subscribe(decided, log_decision)
        bus.subscribe(decided, count)
    return bus


def build_app(settings: Settings, *, tracer_provider: TracerProvider | None = None) -> FastAPI:
    """The HTTP application on PostgreSQL. The engine connects lazily, so the app starts
    even while the database is away, and reports not ready until it answers. Requests and
    their statements are traced with ``tracer_provider`` when one is given."""
    configure_logging(
        settings.payment_log_level, settings.payment_log_format, traced=tracer_provider is not None
    )
    engine = build_async_engine(settings)
    if tracer_provider is not None:
        trace_statements(engine, tracer_provider)
    pool_watch = PoolWatch(engine)
    readiness = ReadinessCheck(
        direct_connector(engine, settings),
        timeout=settings.payment_ready_timeout_ms / 1000,
        pool_watch=pool_watch,
    )
    keys = settings.api_keys()
    metrics = Metrics()
    services = Services(
        unit_of_work=partial(
            SqlAlchemyUnitOfWork,
            engine,
            pool_watch=pool_watch,
            session=session_settings(settings),
            deadline=settings.payment_request_deadline_ms / 1000,
            gate=OrderGate(),
            event_source=settings.payment_event_source,
        ),
        clock=SystemClock(),
        database_ready=readiness.ready,
        key_retention=timedelta(hours=settings.payment_idempotency_retention_hours),
        api_keys=None if keys is None else ApiKeys(keys),
        pool_report=pool_watch.status,
        max_requests_in_flight=settings.payment_max_requests_in_flight,
        bus=message_bus(metrics),
    )

    async def shut_down() -> None:
        await readiness.close()
        await engine.dispose()
        if tracer_provider is not None:  # the last spans sent, off the event loop
            await asyncio.to_thread(tracer_provider.shutdown)

    return create_app(
        services, on_shutdown=shut_down, metrics=metrics, tracer_provider=tracer_provider
    )


def app_from_environment() -> FastAPI:
    """For ``uvicorn --factory``: each worker process builds its own engine."""
    settings = load_settings()
    # Traces only when the OTEL_* variables ask for them (adapters/tracing.py).
    app = build_app(
        settings, tracer_provider=tracing_from_environment(version=version("payment-service"))
    )
    # What start-up made lives as long as the process: out of the collector's sight, a full
    # collection no longer walks it, which shortens the pauses it makes under load.
    gc.collect()
    gc.freeze()
    return app
