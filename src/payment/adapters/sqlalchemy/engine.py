"""The engines and their pool, with a bound on every wait (SPEC §3.6).

The request path runs on an async engine (SQLAlchemy's asyncio extension over psycopg 3's
async driver). SQLAlchemy keeps the pool, the tables and the migrations; the hot statements go
through the psycopg connection the pool hands out (``repositories.Statements``), which costs a
fraction of SQLAlchemy's execution layer per statement. The connections are in autocommit: a
unit of work's only write is one statement, atomic by itself, and no transaction is held open
between its read and its write.

The command line (migrate, verify, purge, demo orders) uses a plain synchronous engine built
from the same settings.

Every connection asks the operating system to watch its TCP path (keepalive probes, and
``tcp_user_timeout`` for data the server never acknowledges): a database host that vanished,
or a link that went silent, is found dead in seconds rather than after the ~15 minutes of TCP
retransmissions. A request does not wait for that: its own deadline cuts the connection
first (``cut_off``, used by ``unit_of_work`` and ``readiness``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from payment.adapters.settings import Settings


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What each transaction runs with, and how it gets it."""

    values: dict[str, str]
    per_transaction: bool
    """True behind a pooler in transaction mode: the settings go with every transaction
    (``SET LOCAL``), never into the server session."""


def session_settings(settings: Settings) -> SessionSettings:
    return SessionSettings(
        values={
            "statement_timeout": str(settings.payment_db_statement_timeout_ms),
            "lock_timeout": str(settings.payment_db_lock_timeout_ms),
            "idle_in_transaction_session_timeout": "60000",
            "TimeZone": "UTC",
        },
        per_transaction=settings.payment_db_transaction_pooling,
    )


KEEPALIVE: dict[str, object] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
"""libpq's TCP settings (ignored on a Unix socket): an idle connection is probed after 10 s
of silence, every 3 s, and dropped after 3 probes unanswered; data sent and not acknowledged
for 10 s drops the connection too."""


def _connect_args(settings: Settings, session: SessionSettings) -> dict[str, object]:
    """The timeouts and the time zone go to PostgreSQL as startup options of each connection.
    Behind a pooler in transaction mode, consecutive transactions may run on different server
    connections and nothing session-wide follows them: the pooler refuses startup options, and
    a statement psycopg prepared on one server connection is unknown to the next. There the
    settings are made at the start of every transaction, and psycopg prepares nothing."""
    connect_args: dict[str, object] = {
        "connect_timeout": settings.payment_db_connect_timeout_seconds,
        "application_name": "payment-service",
        **KEEPALIVE,
    }
    if session.per_transaction:
        connect_args["prepare_threshold"] = None
    else:
        connect_args["options"] = " ".join(
            f"-c {name}={value}" for name, value in session.values.items()
        )
    return connect_args


def _pool_options(settings: Settings) -> dict[str, Any]:
    return {
        "pool_size": settings.payment_db_pool_size,
        "max_overflow": 0,
        "pool_timeout": settings.payment_db_pool_timeout_seconds,
        # No pre-ping: a connection found dead by a unit of work's first statement (a read)
        # is replaced and the statement run once more (unit_of_work.SqlAlchemyUnitOfWork).
        "pool_pre_ping": False,
        "pool_recycle": 1800,
    }


def build_async_engine(settings: Settings) -> AsyncEngine:
    """The request path's engine: connections in autocommit, each wait bounded."""
    session = session_settings(settings)
    return create_async_engine(
        settings.sqlalchemy_url(),
        isolation_level="AUTOCOMMIT",
        # Nothing to roll back on return: a connection comes back only when it is idle, out
        # of any transaction (SqlAlchemyUnitOfWork throws away any other).
        pool_reset_on_return=None,
        connect_args=_connect_args(settings, session),
        **_pool_options(settings),
    )


def build_engine(settings: Settings) -> Engine:
    """A synchronous engine for the commands, with the same timeouts."""
    session = session_settings(settings)
    engine = create_engine(
        settings.sqlalchemy_url(),
        connect_args=_connect_args(settings, session),
        **_pool_options(settings),
    )
    if session.per_transaction:
        event.listen(engine, "begin", lambda connection: _settle(connection, session))
    return engine


SETTLE_TRANSACTION = (
    "SELECT set_config('statement_timeout', %(statement_timeout)s, true),"
    " set_config('lock_timeout', %(lock_timeout)s, true),"
    " set_config('idle_in_transaction_session_timeout', %(idle_in_transaction_session_timeout)s,"
    " true),"
    " set_config('TimeZone', %(TimeZone)s, true)"
)
"""The session's settings for this transaction only (SET LOCAL), as it begins."""


def _settle(connection: Connection, session: SessionSettings) -> None:
    connection.exec_driver_sql(SETTLE_TRANSACTION, session.values)


Connector = Callable[[], Awaitable[AsyncConnection[Any]]]
"""Opens one new connection outside the pool, in autocommit."""


def direct_connector(engine: AsyncEngine, settings: Settings) -> Connector:
    """How to open a connection of ``engine``'s database outside its pool, with the same
    parameters and settings as the pool's (for /readyz, which must not take a slot of the
    requests' pool)."""
    _, params = engine.dialect.create_connect_args(engine.url)
    params.update(_connect_args(settings, session_settings(settings)))

    async def connect() -> AsyncConnection[Any]:
        return await AsyncConnection.connect(autocommit=True, **params)

    return connect


def cut_off(connection: AsyncConnection[Any]) -> None:
    """Shut the connection's socket down both ways, at once and without waiting for the
    server: a statement waiting on it fails with ``OperationalError`` and the connection is
    broken for good.

    Cancelling a task inside a psycopg statement instead would make psycopg send a cancel
    request to the server and wait for the statement to end, which against a frozen server
    or a silent link is the very wait to avoid."""
    with suppress(OSError, psycopg.Error):
        handle = socket.socket(fileno=os.dup(connection.pgconn.socket))
        try:
            handle.shutdown(socket.SHUT_RDWR)
        finally:
            handle.close()


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
    with what the pool itself knows; remembers when the requests' statements last got an
    answer and last failed to. Used from one event loop: no lock needed; nothing here waits.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.waiting = 0
        self.answered_at: float | None = None
        """``time.monotonic()`` when a unit of work last gave back a connection that answered."""
        self.failed_at: float | None = None
        """``time.monotonic()`` when a unit of work last found the database unavailable."""

    def answered_lately(self, within: float) -> bool:
        """The requests' statements got an answer in the last ``within`` seconds, and none
        has failed to since."""
        answered = self.answered_at
        if answered is None or time.monotonic() - answered > within:
            return False
        return self.failed_at is None or self.failed_at < answered

    def status(self) -> PoolStatus:
        pool = self._engine.pool
        if isinstance(pool, QueuePool):
            return PoolStatus(size=pool.size(), in_use=pool.checkedout(), waiting=self.waiting)
        return PoolStatus(size=0, in_use=0, waiting=self.waiting)
