"""A unit of work on one pooled connection: reads as they come, staged writes in one statement.

A connection is taken from the pool on the first statement and given back at the end. The
pool does not ping a connection before lending it (a round trip per request); instead a
connection found dead by the unit of work's first statement, a read that wrote nothing, is
thrown away and the read is sent again on the next one (the pool's other idle connections may
have died with it), until one answers. A write is never sent twice: if its
connection fails, the caller gets ``StorageUnavailable`` and retries with its idempotency key.
"""

from __future__ import annotations

from contextlib import suppress
from types import TracebackType
from typing import Self

import psycopg
from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.pq import TransactionStatus
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection, QueuePool
from sqlalchemy.util import greenlet_spawn

from payment.adapters.sqlalchemy.engine import SETTLE_TRANSACTION, PoolWatch, SessionSettings
from payment.adapters.sqlalchemy.repositories import (
    GROUND_STATEMENT,
    KEPT_KEY_CONSTRAINT,
    Params,
    Row,
    SqlAuditTrail,
    SqlIdempotencyRepository,
    SqlOrderRepository,
    SqlPaymentRepository,
    WriteBatch,
    attempt_ground,
    ground_params,
)
from payment.adapters.sqlalchemy.tables import ONE_SUCCEEDED_PAYMENT_PER_ORDER
from payment.domain.errors import (
    IdempotencyKeyTaken,
    OrderChanged,
    OrderNotPayable,
    StorageUnavailable,
)
from payment.domain.model import OrderStatus
from payment.domain.ports import AttemptGround

_UNAVAILABLE = (
    psycopg.OperationalError,  # connection lost or refused, statement or lock timeout
    psycopg.InterfaceError,
    sa_exc.OperationalError,  # raised by the pool when a new connection fails
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # no connection free in the pool in time
)


class Link:
    """One connection lent by the pool, and how statements run on it."""

    def __init__(self, lent: PoolProxiedConnection, session: SessionSettings | None) -> None:
        self.lent = lent
        self.connection: AsyncConnection = lent.driver_connection  # type: ignore[assignment]
        self._settle = session.values if session is not None and session.per_transaction else None

    @property
    def usable(self) -> bool:
        """Alive, and with no statement or transaction left open on it."""
        connection = self.connection
        return (
            not connection.broken
            and not connection.closed
            and connection.info.transaction_status == TransactionStatus.IDLE
        )

    async def run(self, statement: str, params: Params) -> list[Row]:
        connection = self.connection
        if self._settle is None:
            cursor = await connection.execute(statement, params)
            return await cursor.fetchall()
        async with connection.transaction():  # behind a pooler: the settings go with it
            await connection.execute(SETTLE_TRANSACTION, self._settle)
            cursor = await connection.execute(statement, params)
            return await cursor.fetchall()

    async def give_back(self) -> None:
        if self.usable:
            self.lent.close()  # no reset on return, so no I/O: no need of a greenlet
        else:
            await greenlet_spawn(self.lent.invalidate)


class SqlAlchemyUnitOfWork:
    """Stages writes and sends them as one statement on ``commit()``; drops them on exit
    unless committed.

    ``pool_watch``, when given, counts the wait for a connection; ``session`` says how the
    connection's settings reach each transaction.
    """

    orders: SqlOrderRepository
    payments: SqlPaymentRepository
    idempotency: SqlIdempotencyRepository
    audit: SqlAuditTrail

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        pool_watch: PoolWatch | None = None,
        session: SessionSettings | None = None,
    ) -> None:
        self._engine = engine
        self._pool_watch = pool_watch
        self._session = session
        self._link: Link | None = None
        self._batch = WriteBatch()
        self.orders = SqlOrderRepository(self, self._batch)
        self.payments = SqlPaymentRepository(self, self._batch)
        self.idempotency = SqlIdempotencyRepository(self._batch)
        self.audit = SqlAuditTrail(self, self._batch)

    async def __aenter__(self) -> Self:
        self._batch.clear()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._batch.clear()
        link, self._link = self._link, None
        if link is not None:
            with suppress(Exception):  # the pool forgets a connection it cannot close
                await link.give_back()
        if exc is not None and isinstance(exc, _UNAVAILABLE):
            raise StorageUnavailable from exc

    async def ground_for(self, order_id: int, *, caller: str, key: str | None) -> AttemptGround:
        [row] = await self.read(GROUND_STATEMENT, ground_params(order_id, caller=caller, key=key))
        return attempt_ground(row)

    async def read(self, statement: str, params: Params) -> list[Row]:
        """Run a statement that writes nothing (but, at most, takes a sequence's value)."""
        if self._link is not None:
            return await self._link.run(statement, params)
        link = await self._take_link()
        retries: int | None = None
        while True:
            try:
                return await link.run(statement, params)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                if not (link.connection.broken or link.connection.closed):
                    raise
                # Dead while it lay in the pool (a restart, terminated backends): thrown away,
                # and the read sent on the next one. The connections idle beside it may have
                # died with it: up to as many as there are, then one the pool makes anew.
                if retries is None:
                    retries = _idle_connections(self._engine) + 1
                if retries == 0:
                    raise
            retries -= 1
            await self._discard_link()
            link = await self._take_link()

    async def commit(self) -> None:
        if self._batch.empty:
            return
        statement, params = self._batch.statement()
        guarded = self._batch.guarded
        order_id = self._batch.paying
        self._batch.clear()
        link = self._link or await self._take_link()
        try:
            rows = await link.run(statement, params)
        except UniqueViolation as violation:
            constraint = violation.diag.constraint_name
            if constraint == KEPT_KEY_CONSTRAINT:
                raise IdempotencyKeyTaken from None
            if constraint == ONE_SUCCEEDED_PAYMENT_PER_ORDER and isinstance(order_id, int):
                raise OrderNotPayable(order_id, OrderStatus.PAID) from None
            raise
        if guarded and rows[0][0] != 1:
            raise OrderChanged

    async def _take_link(self) -> Link:
        watch = self._pool_watch
        if watch is not None:
            watch.waiting += 1
        try:
            lent = await self._engine.raw_connection()
        finally:
            if watch is not None:
                watch.waiting -= 1
        self._link = Link(lent, self._session)
        return self._link

    async def _discard_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await greenlet_spawn(link.lent.invalidate)


def _idle_connections(engine: AsyncEngine) -> int:
    pool = engine.pool
    return pool.checkedin() if isinstance(pool, QueuePool) else 0


async def database_answers(engine: AsyncEngine, session: SessionSettings | None = None) -> bool:
    """True when the database runs a trivial query now."""
    try:
        async with SqlAlchemyUnitOfWork(engine, session=session) as uow:
            await uow.read("SELECT 1", {})
    except StorageUnavailable:
        return False
    return True
