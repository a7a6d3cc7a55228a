"""A unit of work as one database transaction on one pooled connection."""

from __future__ import annotations

from contextlib import nullcontext, suppress
from types import TracebackType
from typing import Self

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from payment.adapters.sqlalchemy.engine import PoolWatch
from payment.adapters.sqlalchemy.repositories import (
    SqlAlchemyAuditTrail,
    SqlAlchemyIdempotencyRepository,
    SqlAlchemyOrderRepository,
    SqlAlchemyPaymentRepository,
)
from payment.domain.errors import StorageUnavailable

_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
"""Connection lost or refused, a timeout fired, the pool was exhausted: the store is away."""


def _is_unavailable(error: BaseException) -> bool:
    return isinstance(error, _UNAVAILABLE) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )


class SqlAlchemyUnitOfWork:
    """Begins a transaction on entry; rolls it back on exit unless ``commit()`` ran.

    ``idempotency_wait_ms`` is how long a request waits for another one holding the same
    idempotency key; ``pool_watch``, when given, counts the wait for a connection.
    """

    orders: SqlAlchemyOrderRepository
    payments: SqlAlchemyPaymentRepository
    idempotency: SqlAlchemyIdempotencyRepository
    audit: SqlAlchemyAuditTrail

    def __init__(
        self,
        engine: Engine,
        *,
        idempotency_wait_ms: int = 1000,
        pool_watch: PoolWatch | None = None,
    ) -> None:
        self._engine = engine
        self._pool_watch = pool_watch
        self._idempotency_wait_ms = idempotency_wait_ms

    def __enter__(self) -> Self:
        try:
            with nullcontext() if self._pool_watch is None else self._pool_watch.waiting():
                self._connection: Connection = self._engine.connect()
        except Exception as error:
            if _is_unavailable(error):
                raise StorageUnavailable from error
            raise
        self._connection.begin()  # lazy: BEGIN goes out with the first statement
        self.orders = SqlAlchemyOrderRepository(self._connection)
        self.payments = SqlAlchemyPaymentRepository(self._connection)
        self.idempotency = SqlAlchemyIdempotencyRepository(
            self._connection,
            wait_ms=self._idempotency_wait_ms,
        )
        self.audit = SqlAlchemyAuditTrail(self._connection)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with suppress(Exception):  # a broken connection is discarded by the pool either way
            self._connection.close()  # rolls back whatever was not committed
        if exc is not None and _is_unavailable(exc):
            raise StorageUnavailable from exc

    def commit(self) -> None:
        self._connection.commit()
