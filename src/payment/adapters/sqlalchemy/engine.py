"""The engine and its pool, with a bound on every wait (SPEC §3.6)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import QueuePool

from payment.adapters.settings import Settings


def build_engine(settings: Settings) -> Engine:
    """An engine whose connect, pool checkout, lock waits and statements all time out.

    The timeouts and the time zone go to PostgreSQL as startup options of each connection.
    Behind a pooler in transaction mode (``PAYMENT_DB_TRANSACTION_POOLING``), consecutive
    transactions may run on different server connections and nothing session-wide follows
    them: the pooler refuses startup options, and a statement psycopg prepared on one server
    connection is unknown to the next. There the settings are made at the start of every
    transaction, and psycopg prepares nothing.
    """
    session = {
        "statement_timeout": str(settings.payment_db_statement_timeout_ms),
        "lock_timeout": str(settings.payment_db_lock_timeout_ms),
        "idle_in_transaction_session_timeout": "60000",
        "TimeZone": "UTC",
    }
    connect_args: dict[str, object] = {
        "connect_timeout": settings.payment_db_connect_timeout_seconds,
        "application_name": "payment-service",
    }
    if settings.payment_db_transaction_pooling:
        connect_args["prepare_threshold"] = None
    else:
        connect_args["options"] = " ".join(f"-c {name}={value}" for name, value in session.items())
    engine = create_engine(
        settings.sqlalchemy_url(),
        pool_size=settings.payment_db_pool_size,
        max_overflow=0,
        pool_timeout=settings.payment_db_pool_timeout_seconds,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=connect_args,
    )
    if settings.payment_db_transaction_pooling:
        event.listen(engine, "begin", partial(_settle_transaction, session=session))
    return engine


_SETTLE_TRANSACTION = text(
    "SELECT set_config('statement_timeout', :statement_timeout, true),"
    " set_config('lock_timeout', :lock_timeout, true),"
    " set_config('idle_in_transaction_session_timeout', :idle_in_transaction_session_timeout,"
    " true),"
    " set_config('TimeZone', :TimeZone, true)"
)


def _settle_transaction(connection: Connection, *, session: dict[str, str]) -> None:
    """The session's settings for this transaction only (SET LOCAL), as it begins."""
    connection.execute(_SETTLE_TRANSACTION, session)


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
