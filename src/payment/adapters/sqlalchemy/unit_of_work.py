"""A unit of work on one pooled connection: reads as they come, staged writes in one statement.

A connection is taken from the pool on the first statement and given back at the end. The
pool does not ping a connection before lending it (a round trip per request); instead a
connection found dead by the unit of work's first statement, a read that wrote nothing, is
thrown away and the read is sent again on the next one (the pool's other idle connections may
have died with it), until one answers. A write is never sent twice: if its
connection fails, the caller gets ``WriteUnconfirmed`` and retries with its idempotency key.

A unit of work has a deadline (SPEC §3.6): everything it waits for, a connection from the
pool, a new connection, a statement, the ``OrderGate``, ends by then with
``StorageUnavailable``. A statement still running then has its connection cut
(``engine.cut_off``) rather than its task cancelled, and the connection is thrown away.

The ``OrderGate`` lets one unit of work of this process at a time pay a given order, so that
one order whose row is locked elsewhere holds one pooled connection, not all of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from contextlib import suppress
from types import TracebackType
from typing import Self

import psycopg
from psycopg import AsyncConnection
from psycopg.errors import CheckViolation, UniqueViolation
from psycopg.pq import TransactionStatus
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection, QueuePool
from sqlalchemy.util import greenlet_spawn

from payment.adapters import cloudevents
from payment.adapters.sqlalchemy.engine import (
    SETTLE_TRANSACTION,
    PoolWatch,
    SessionSettings,
    cut_off,
)
from payment.adapters.sqlalchemy.repositories import (
    GROUND_STATEMENT,
    KEPT_KEY_CONSTRAINT,
    REFUND_GROUND_STATEMENT,
    Params,
    Row,
    SqlAuditTrail,
    SqlEventLog,
    SqlIdempotencyRepository,
    SqlOrderRepository,
    SqlOutbox,
    SqlPaymentRepository,
    SqlRefundAuditTrail,
    SqlRefundRepository,
    WriteBatch,
    attempt_ground,
    ground_params,
    refund_ground,
    refund_ground_params,
)
from payment.adapters.sqlalchemy.tables import (
    ONE_SUCCEEDED_PAYMENT_PER_ORDER,
    REFUNDS_WITHIN_AMOUNT,
)
from payment.domain.errors import (
    IdempotencyKeyTaken,
    OrderBusy,
    OrderChanged,
    OrderNotPayable,
    PaymentBusy,
    PaymentChanged,
    StorageUnavailable,
    WriteUnconfirmed,
)
from payment.domain.events import Event
from payment.domain.model import OrderStatus
from payment.domain.ports import AttemptGround
from payment.domain.refunds import Refundable, RefundGround

_UNAVAILABLE = (
    psycopg.OperationalError,  # connection lost or refused, statement or lock timeout
    psycopg.InterfaceError,
    sa_exc.OperationalError,  # raised by the pool when a new connection fails
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # no connection free in the pool in time
)


HOT_ORDER_PATIENCE_SECONDS = 0.5
"""How long the payment of an order may have been under way in this process before the
order's other payments are answered ``OrderBusy`` instead of waiting for it. A payment takes
milliseconds; one this old waits on something (a lock held elsewhere)."""


class _Hold:
    __slots__ = ("released", "since")

    def __init__(self, since: float) -> None:
        self.since = since
        self.released: asyncio.Event | None = None


class OrderGate:
    """One payment of an order (and one refund of a payment) at a time in this process. A
    payment that finds the order's payment under way waits for it to end, but only until
    that one has been under way ``patience`` seconds: then it is answered ``OrderBusy`` (a
    refund ``PaymentBusy``) at once, and holds no database connection meanwhile. Concurrent
    payments of one order keep their answers (one pays, the others see it paid or replay
    it), in turn; a locked order keeps one connection busy. Used from one event loop: no
    lock needed."""

    def __init__(self, patience: float = HOT_ORDER_PATIENCE_SECONDS) -> None:
        self.patience = patience
        self._holds: dict[Hashable, _Hold] = {}

    def __len__(self) -> int:
        """Orders being paid now."""
        return len(self._holds)

    async def enter(self, key: Hashable, busy: Callable[[], Exception] | None = None) -> None:
        """Until this request may go on with ``key`` (an order's id, for its payment); then
        ``busy()`` (``OrderBusy`` by default) when it may not soon."""
        hold = self._holds.get(key)
        if hold is None:
            self._holds[key] = _Hold(time.monotonic())
            return
        while hold is not None:
            left = hold.since + self.patience - time.monotonic()
            if left <= 0:
                raise _busy(key, busy)
            if hold.released is None:
                hold.released = asyncio.Event()
            try:
                async with asyncio.timeout(left):
                    await hold.released.wait()
            except TimeoutError:
                raise _busy(key, busy) from None
            hold = self._holds.get(key)
        self._holds[key] = _Hold(time.monotonic())

    def leave(self, key: Hashable) -> None:
        hold = self._holds.pop(key, None)
        if hold is not None and hold.released is not None:
            hold.released.set()


def _busy(key: Hashable, busy: Callable[[], Exception] | None) -> Exception:
    if busy is not None:
        return busy()
    if not isinstance(key, int):
        raise TypeError(f"a gate on {key!r} needs its own busy error")
    return OrderBusy(key)


class Link:
    """One connection lent by the pool, and how statements run on it."""

    def __init__(self, lent: PoolProxiedConnection, session: SessionSettings | None) -> None:
        self.lent = lent
        self.connection: AsyncConnection = lent.driver_connection  # type: ignore[assignment]
        self._settle = session.values if session is not None and session.per_transaction else None
        self.busy = False
        """A statement is on its way or awaited."""
        self.cut = False
        """Cut off by the deadline: whatever psycopg thinks, it is dead."""

    @property
    def usable(self) -> bool:
        """Alive, and with no statement or transaction left open on it."""
        connection = self.connection
        return (
            not self.cut
            and not connection.broken
            and not connection.closed
            and connection.info.transaction_status == TransactionStatus.IDLE
        )

    @property
    def lost(self) -> bool:
        """The connection is gone: a statement sent on it may have run or not."""
        return self.cut or self.connection.broken or self.connection.closed

    def cut_off(self) -> None:
        self.cut = True
        cut_off(self.connection)

    async def run(self, statement: str, params: Params) -> list[Row]:
        connection = self.connection
        self.busy = True
        try:
            if self._settle is None:
                cursor = await connection.execute(statement, params)
                return await cursor.fetchall()
            async with connection.transaction():  # behind a pooler: the settings go with it
                await connection.execute(SETTLE_TRANSACTION, self._settle)
                cursor = await connection.execute(statement, params)
                return await cursor.fetchall()
        finally:
            self.busy = False

    async def give_back(self) -> bool:
        """Back to the pool if usable, else thrown away; whether it went back."""
        if self.usable:
            self.lent.close()  # no reset on return, so no I/O: no need of a greenlet
            return True
        await greenlet_spawn(self.lent.invalidate)
        return False


class SqlAlchemyUnitOfWork:
    """Stages writes and sends them as one statement on ``commit()``; drops them on exit
    unless committed.

    ``pool_watch``, when given, counts the wait for a connection and notes the answers;
    ``session`` says how the connection's settings reach each transaction; ``deadline``
    (seconds from entering) bounds every wait of the unit of work; ``gate`` lets one unit of
    work of the process at a time pay an order.
    """

    orders: SqlOrderRepository
    payments: SqlPaymentRepository
    idempotency: SqlIdempotencyRepository
    audit: SqlAuditTrail
    events: SqlEventLog
    refunds: SqlRefundRepository
    refund_audit: SqlRefundAuditTrail

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        pool_watch: PoolWatch | None = None,
        session: SessionSettings | None = None,
        deadline: float | None = None,
        gate: OrderGate | None = None,
        event_source: str = cloudevents.DEFAULT_SOURCE,
    ) -> None:
        self._engine = engine
        self._pool_watch = pool_watch
        self._session = session
        self._deadline = deadline
        self._gate = gate
        self._gated: Hashable | None = None
        self._link: Link | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._expired = False
        self._cancelled_at: int | None = None
        """The task's count of cancel requests before the deadline cancelled it, if it did."""
        self._batch = WriteBatch()
        self.orders = SqlOrderRepository(self, self._batch)
        self.payments = SqlPaymentRepository(self, self._batch)
        self.idempotency = SqlIdempotencyRepository(self._batch)
        self.audit = SqlAuditTrail(self, self._batch)
        self.events = SqlEventLog(self)
        self.refunds = SqlRefundRepository(self, self._batch)
        self.refund_audit = SqlRefundAuditTrail(self, self._batch)
        self._outbox = SqlOutbox(self._batch, source=event_source)
        self._committed_events: list[Event] = []

    async def __aenter__(self) -> Self:
        self._batch.clear()
        self._expired = False
        self._cancelled_at = None
        if self._deadline is not None:
            self._task = asyncio.current_task()
            self._timer = asyncio.get_running_loop().call_later(self._deadline, self._expire)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._batch.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._gated is not None and self._gate is not None:
            self._gate.leave(self._gated)
        self._gated = None
        link, self._link = self._link, None
        given_back = False
        if link is not None:
            with suppress(Exception):  # the pool forgets a connection it cannot close
                given_back = await link.give_back()
        watch = self._pool_watch
        if watch is not None and given_back:
            watch.answered_at = time.monotonic()
        if exc is None:
            return
        unavailable = self._unavailable(exc)
        if unavailable is None:
            return
        if watch is not None and not given_back:
            watch.failed_at = time.monotonic()
        if unavailable is exc:
            return  # already the domain's error (a write left unconfirmed), raised as it is
        raise unavailable from unavailable.__cause__

    def _unavailable(self, exc: BaseException) -> StorageUnavailable | None:
        """What ``exc`` is in the domain's words when the store failed; None otherwise.
        A cancellation made by the deadline is taken back here."""
        if self._cancelled_at is not None:
            assert self._task is not None
            cancelled_at, self._cancelled_at = self._cancelled_at, None
            if self._task.uncancel() <= cancelled_at and isinstance(exc, asyncio.CancelledError):
                return _caused(StorageUnavailable(), self._deadline_passed())
        if isinstance(exc, StorageUnavailable):
            return exc
        if isinstance(exc, _UNAVAILABLE):
            return _caused(StorageUnavailable(), self._deadline_passed() if self._expired else exc)
        return None

    def _deadline_passed(self) -> TimeoutError:
        milliseconds = 0.0 if self._deadline is None else self._deadline * 1000
        return TimeoutError(
            f"the database did not answer within the request's deadline ({milliseconds:.0f} ms)"
        )

    def _expire(self) -> None:
        """The deadline: a statement under way has its connection cut, so that it fails at
        once; any other wait (for the pool, a new connection, the gate) is cancelled."""
        self._timer = None
        self._expired = True
        link = self._link
        if link is not None and link.busy:
            link.cut_off()
            return
        task = self._task
        if task is not None and not task.done():
            self._cancelled_at = task.cancelling()
            task.cancel()

    async def ground_for(self, order_id: int, *, caller: str, key: str | None) -> AttemptGround:
        if self._gate is not None and self._gated is None:
            await self._gate.enter(order_id)
            self._gated = order_id
        [row] = await self.read(GROUND_STATEMENT, ground_params(order_id, caller=caller, key=key))
        return attempt_ground(row)

    async def refund_ground_for(
        self, payment_id: int, *, caller: str, key: str | None
    ) -> RefundGround:
        if self._gate is not None and self._gated is None:
            gated = ("refund", payment_id)
            await self._gate.enter(gated, lambda: PaymentBusy(payment_id))
            self._gated = gated
        params = refund_ground_params(payment_id, caller=caller, key=key)
        [row] = await self.read(REFUND_GROUND_STATEMENT, params)
        return refund_ground(row)

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
                if self._expired or not (link.connection.broken or link.connection.closed):
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

    def collect_new_events(self) -> list[Event]:
        events, self._committed_events = self._committed_events, []
        return events

    async def commit(self) -> None:
        if self._batch.empty:
            return
        changed = self._batch.changed
        recorded = [] if changed is None else changed.events
        for event in recorded:
            if event.published:
                self._outbox.add(event)
        statement, params = self._batch.statement()
        guarded = self._batch.guarded
        order_id = self._batch.paying
        refunding = changed.payment_id if isinstance(changed, Refundable) else None
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
        except CheckViolation as violation:
            # The guard saw the refunds the decision was made on; the check is the database's
            # own word that the sum stays within the payment: decide again on what is stored.
            if violation.diag.constraint_name == REFUNDS_WITHIN_AMOUNT and refunding is not None:
                raise PaymentChanged from None
            raise
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            if not link.lost:
                raise  # the server refused it (a lock or statement timeout): nothing written
            raise WriteUnconfirmed from (self._deadline_passed() if self._expired else error)
        if guarded and rows[0][0] != 1:
            raise PaymentChanged if refunding is not None else OrderChanged
        self._committed_events += recorded
        if changed is not None:
            changed.events = []

    async def _take_link(self) -> Link:
        if self._expired:
            raise StorageUnavailable from self._deadline_passed()
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


def _caused(error: StorageUnavailable, cause: BaseException) -> StorageUnavailable:
    error.__cause__ = cause
    return error


def _idle_connections(engine: AsyncEngine) -> int:
    pool = engine.pool
    return pool.checkedin() if isinstance(pool, QueuePool) else 0
