"""The composition root: settings in, a wired application out."""

from __future__ import annotations

import gc
from datetime import timedelta
from functools import partial

from fastapi import FastAPI

from payment.adapters.clock import SystemClock
from payment.adapters.logging import configure_logging
from payment.adapters.settings import Settings, load_settings
from payment.adapters.sqlalchemy.engine import (
    PoolWatch,
    build_async_engine,
    direct_connector,
    session_settings,
)
from payment.adapters.sqlalchemy.readiness import ReadinessCheck
from payment.adapters.sqlalchemy.unit_of_work import OrderGate, SqlAlchemyUnitOfWork
from payment.entrypoints.http import Services, create_app
from payment.entrypoints.http.auth import ApiKeys


def build_app(settings: Settings) -> FastAPI:
    """The HTTP application on PostgreSQL. The engine connects lazily, so the app starts
    even while the database is away, and reports not ready until it answers."""
    configure_logging(settings.payment_log_level, settings.payment_log_format)
    engine = build_async_engine(settings)
    pool_watch = PoolWatch(engine)
    readiness = ReadinessCheck(
        direct_connector(engine, settings),
        timeout=settings.payment_ready_timeout_ms / 1000,
        pool_watch=pool_watch,
    )
    keys = settings.api_keys()
    services = Services(
        unit_of_work=partial(
            SqlAlchemyUnitOfWork,
            engine,
            pool_watch=pool_watch,
            session=session_settings(settings),
            deadline=settings.payment_request_deadline_ms / 1000,
            gate=OrderGate(),
        ),
        clock=SystemClock(),
        database_ready=readiness.ready,
        key_retention=timedelta(hours=settings.payment_idempotency_retention_hours),
        api_keys=None if keys is None else ApiKeys(keys),
        pool_report=pool_watch.status,
        max_requests_in_flight=settings.payment_max_requests_in_flight,
    )

    async def shut_down() -> None:
        await readiness.close()
        await engine.dispose()

    return create_app(services, on_shutdown=shut_down)


def app_from_environment() -> FastAPI:
    """For ``uvicorn --factory``: each worker process builds its own engine."""
    app = build_app(load_settings())
    # What start-up made lives as long as the process: out of the collector's sight, a full
    # collection no longer walks it, which shortens the pauses it makes under load.
    gc.collect()
    gc.freeze()
    return app
