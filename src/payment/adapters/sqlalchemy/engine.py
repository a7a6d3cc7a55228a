"""The engine and its pool, with a bound on every wait (SPEC §3.6)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import QueuePool

from payment.adapters.settings import Settings


def build_engine(settings: Settings) -> Engine:
    """An engine whose connect, pool checkout, lock waits and statements all time out."""
    options = (
        f"-c statement_timeout={settings.payment_db_statement_timeout_ms}"
        f" -c lock_timeout={settings.payment_db_lock_timeout_ms}"
        " -c idle_in_transaction_session_timeout=60000"
        " -c timezone=UTC"
    )
    return create_engine(
        settings.sqlalchemy_url(),
        pool_size=settings.payment_db_pool_size,
        max_overflow=0,
        pool_timeout=settings.payment_db_pool_timeout_seconds,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": settings.payment_db_connect_timeout_seconds,
            "options": options,
            "application_name": "payment-service",
        },
    )


def database_answers(engine: Engine) -> bool:
    """True when the database runs a trivial query now."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class PoolStatus:
    size: int
    """Connections the pool keeps at most."""
    in_use: int
    """Connections lent out now."""
    waiting: int
    """Units of work waiting for a connection now."""


class PoolWatch:
    """Counts the units of work waiting for a connection of ``engine``'s pool; reports it
    with what the pool itself knows."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._waiting = 0
        self._lock = threading.Lock()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        with self._lock:
            self._waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1

    def status(self) -> PoolStatus:
        pool = self._engine.pool
        if isinstance(pool, QueuePool):
            return PoolStatus(size=pool.size(), in_use=pool.checkedout(), waiting=self._waiting)
        return PoolStatus(size=0, in_use=0, waiting=self._waiting)
