"""The composition root: settings in, a wired application out."""

from __future__ import annotations

import gc
from datetime import timedelta
from functools import partial

from fastapi import FastAPI

from payment.adapters.clock import SystemClock
from payment.adapters.logging import configure_logging
from payment.adapters.settings import Settings, load_settings
from payment.adapters.sqlalchemy.engine import PoolWatch, build_async_engine, session_settings
from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork, database_answers
from payment.entrypoints.http import Services, create_app
from payment.entrypoints.http.auth import ApiKeys


def build_app(settings: Settings) -> FastAPI:
    """The HTTP application on PostgreSQL. The engine connects lazily, so the app starts
    even while the database is away, and reports not ready until it answers."""
    configure_logging(settings.payment_log_level, settings.payment_log_format)
    engine = build_async_engine(settings)
    session = session_settings(settings)
    pool_watch = PoolWatch(engine)
    keys = settings.api_keys()
    services = Services(
        unit_of_work=partial(SqlAlchemyUnitOfWork, engine, pool_watch=pool_watch, session=session),
        clock=SystemClock(),
        database_ready=partial(database_answers, engine, session),
        key_retention=timedelta(hours=settings.payment_idempotency_retention_hours),
        api_keys=None if keys is None else ApiKeys(keys),
        pool_report=pool_watch.status,
    )
    return create_app(services, on_shutdown=engine.dispose)


def app_from_environment() -> FastAPI:
    """For ``uvicorn --factory``: each worker process builds its own engine."""
    app = build_app(load_settings())
    # What start-up made lives as long as the process: out of the collector's sight, a full
    # collection no longer walks it, which shortens the pauses it makes under load.
    gc.collect()
    gc.freeze()
    return app
