"""The pay use case on PostgreSQL: one read and one guarded write, all or nothing, once per
order."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from psycopg import AsyncConnection, pq
from sqlalchemy import Engine, event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from payment.adapters.clock import SystemClock
from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from payment.domain.attempts import Decision, Outcome
from payment.domain.errors import OrderNotPayable
from payment.domain.model import Payment
from payment.domain.refunds import RefundOutcome
from payment.domain.services import Reply
from tests.support.attempts import CALLER, REQUEST_ID, pay, plain_answer
from tests.support.orders import add_orders, broken_invariants
from tests.support.refunds import refund

pytestmark = pytest.mark.anyio

Rows = tuple[tuple[tuple[Any, ...], ...], tuple[tuple[Any, ...], ...]]


@dataclass(frozen=True)
class FixedClock:
    moment: datetime

    def now(self) -> datetime:
        return self.moment


def stored_rows(engine: Engine) -> Rows:
    """Every order and every payment, as the database holds them."""
    with engine.connect() as connection:
        orders = connection.execute(text("SELECT * FROM orders ORDER BY id")).all()
        payments = connection.execute(text("SELECT * FROM payments ORDER BY id")).all()
    return tuple(tuple(row) for row in orders), tuple(tuple(row) for row in payments)


def audit_rows(engine: Engine) -> list[Any]:
    """The audit trail, oldest first."""
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT * FROM payment_attempts ORDER BY id")).all())


def kept_keys(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT * FROM idempotency_keys")).all())


async def pay_with(
    engine: AsyncEngine, order_id: int, amount: str, *, key: str | None = None
) -> Reply:
    return await pay(
        order_id, amount, key=key, uow=SqlAlchemyUnitOfWork(engine), clock=SystemClock()
    )


def paid(reply: Reply) -> Payment:
    assert reply.outcome is Outcome.PAID, reply
    assert reply.payment is not None
    return reply.payment


async def test_paying_the_total_records_the_payment_and_marks_the_order_paid(
    clean_database: Engine, async_engine: AsyncEngine
) -> None:
    [order_id] = add_orders(clean_database, "199.99")

    reply = await pay_with(async_engine, order_id, "199.99")

    payment = paid(reply)
    with clean_database.connect() as connection:
        order = connection.execute(
            text("SELECT status, paid_at FROM orders WHERE id = :id"), {"id": order_id}
        ).one()
        stored = connection.execute(text("SELECT * FROM payments")).one()
    assert (stored.id, stored.order_id, stored.amount, stored.status) == (
        payment.id,
        order_id,
        Decimal("199.99"),
        "succeeded",
    )
    assert order.status == "paid"
    assert order.paid_at == stored.created_at
    assert payment.created_at == stored.created_at.replace(tzinfo=UTC)
    assert abs(datetime.now(UTC).replace(tzinfo=None) - stored.created_at) < timedelta(minutes=1)
    assert reply.answer == plain_answer(Decision(Outcome.PAID, payment=payment))
    assert broken_invariants(clean_database) == []


async def test_a_paid_attempt_leaves_exactly_one_audit_record_naming_its_payment(
    clean_database: Engine, async_engine: AsyncEngine
) -> None:
    [order_id] = add_orders(clean_database, "199.99")

    payment = paid(await pay_with(async_engine, order_id, "199.99", key="key-1"))

    [record] = audit_rows(clean_database)
    assert (
        record.created_at,
        record.request_id,
        record.caller,
        record.order_id,
        record.claimed_amount,
        record.outcome,
        record.payment_id,
        record.idempotency_key,
    ) == (
        payment.created_at.replace(tzinfo=None),
        REQUEST_ID,
        CALLER,
        order_id,
        Decimal("199.99"),
        "paid",
        payment.id,
        "key-1",
    )


async def test_the_order_its_payment_its_audit_record_and_its_key_are_written_by_one_transaction(
    clean_database: Engine, async_engine: AsyncEngine
) -> None:
    [order_id] = add_orders(clean_database, "25.00")

    await pay_with(async_engine, order_id, "25.00", key="key-1")

    with clean_database.connect() as connection:
        writers = {
            table: connection.execute(text(f"SELECT xmin::text FROM {table}")).scalar_one()
            for table in ("payments", "payment_attempts", "idempotency_keys")
        }
        writers["orders"] = connection.execute(
            text("SELECT xmin::text FROM orders WHERE id = :id"), {"id": order_id}
        ).scalar_one()
    assert len(set(writers.values())) == 1, writers


async def test_times_are_stored_as_utc_whatever_the_clocks_zone(
    clean_database: Engine, async_engine: AsyncEngine
) -> None:
    [order_id] = add_orders(clean_database, "25.00")
    two_hours_east = timezone(timedelta(hours=2))
    clock = FixedClock(datetime(2026, 11, 26, 12, 15, 30, 123456, tzinfo=two_hours_east))

    reply = await pay(
        order_id, "25.00", key="key-1", uow=SqlAlchemyUnitOfWork(async_engine), clock=clock
    )

    payment = paid(reply)
    utc = datetime(2026, 11, 26, 10, 15, 30, 123456, tzinfo=UTC)
    with clean_database.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT (SELECT paid_at FROM orders), (SELECT created_at FROM payments),"
                " (SELECT created_at FROM payment_attempts),"
                " (SELECT created_at FROM idempotency_keys),"
                " (SELECT expires_at FROM idempotency_keys)"
            )
        ).one()
    naive = utc.replace(tzinfo=None)
    assert tuple(stored) == (naive, naive, naive, naive, naive + timedelta(hours=24))
    assert payment.created_at == utc
    assert payment.created_at.tzinfo == UTC


@pytest.mark.parametrize(
    ("status", "amount", "outcome"),
    [
        pytest.param("pending", "199.98", Outcome.AMOUNT_MISMATCH, id="a cent short"),
        pytest.param("pending", "200.00", Outcome.AMOUNT_MISMATCH, id="a cent over"),
        pytest.param("pending", "1999.90", Outcome.AMOUNT_MISMATCH, id="digits shifted"),
        pytest.param("cancelled", "199.99", Outcome.ORDER_NOT_PAYABLE, id="cancelled"),
        pytest.param("paid", "199.99", Outcome.ORDER_NOT_PAYABLE, id="marked paid elsewhere"),
    ],
)
async def test_a_refused_payment_changes_no_order_and_no_payment_and_is_audited(
    clean_database: Engine, async_engine: AsyncEngine, status: str, amount: str, outcome: Outcome
) -> None:
    [order_id] = add_orders(clean_database, "199.99", status=status)
    before = stored_rows(clean_database)

    reply = await pay_with(async_engine, order_id, amount)

    assert reply.outcome is outcome
    assert reply.payment is None
    assert reply.answer == plain_answer(Decision(outcome))
    assert stored_rows(clean_database) == before
    assert [
        (r.order_id, r.claimed_amount, r.outcome, r.payment_id) for r in audit_rows(clean_database)
    ] == [(order_id, Decimal(amount), outcome.value, None)]


async def test_paying_an_order_that_does_not_exist_is_refused_and_changes_nothing(
    clean_database: Engine, async_engine: AsyncEngine
) -> None:
    [order_id] = add_orders(clean_database, "199.99")
    before = stored_rows(clean_database)

    reply = await pay_with(async_engine, order_id + 1, "199.99")

    assert reply.outcome is Outcome.ORDER_NOT_FOUND
    assert reply.answer.status == 404
    assert stored_rows(clean_database) == before
    assert [(r.order_id, r.outcome) for r in audit_rows(clean_database)] == [
        (order_id + 1, "order_not_found")
    ]


async def test_paying_a_paid_order_again_is_refused_and_keeps_the_first_payment(
    clean_database: Engine, async_engine: AsyncEngine
) -> None:
    [order_id] = add_orders(clean_database, "19.99")
    first = paid(await pay_with(async_engine, order_id, "19.99"))
    after_first = stored_rows(clean_database)

    reply = await pay_with(async_engine, order_id, "19.99")

    assert reply.outcome is Outcome.ORDER_NOT_PAYABLE
    assert reply.answer.status == 409
    assert stored_rows(clean_database) == after_first
    assert [(r.outcome, r.payment_id) for r in audit_rows(clean_database)] == [
        ("paid", first.id),
        ("order_not_payable", None),
    ]


async def test_the_unique_index_refuses_a_second_payment_even_when_the_order_looks_pending(
    clean_database: Engine, async_engine: AsyncEngine
) -> None:
    [order_id] = add_orders(clean_database, "19.99")
    await pay_with(async_engine, order_id, "19.99")
    with clean_database.begin() as connection:
        connection.execute(text("UPDATE orders SET status = 'pending', paid_at = NULL"))
    before = stored_rows(clean_database)
    trail_before = audit_rows(clean_database)

    # Only a store changed behind the service's back gets here: the refusal comes from the
    # database, after the rules allowed the payment, and is raised rather than answered.
    with pytest.raises(OrderNotPayable):
        await pay_with(async_engine, order_id, "19.99", key="key-1")

    assert stored_rows(clean_database) == before
    assert audit_rows(clean_database) == trail_before
    assert kept_keys(clean_database) == []


class CrashBeforeCommit(Exception):
    pass


class UnitOfWorkThatCrashesBeforeCommit(SqlAlchemyUnitOfWork):
    """Has every write staged, notes the order's status as the database holds it, then fails
    instead of committing."""

    seen_order_status: str | None = None

    async def commit(self) -> None:
        [(status,)] = await self.read("SELECT status FROM orders", {})
        self.seen_order_status = status
        raise CrashBeforeCommit


async def test_a_crash_after_the_decision_and_before_the_commit_leaves_no_write(
    clean_database: Engine, async_engine: AsyncEngine
) -> None:
    [order_id] = add_orders(clean_database, "49.90")
    before = stored_rows(clean_database)
    uow = UnitOfWorkThatCrashesBeforeCommit(async_engine)

    with pytest.raises(CrashBeforeCommit):
        await pay(order_id, "49.90", key="key-1", uow=uow, clock=SystemClock())

    assert uow.seen_order_status == "pending"
    assert stored_rows(clean_database) == before
    assert audit_rows(clean_database) == []
    assert kept_keys(clean_database) == []
    retry = await pay_with(async_engine, order_id, "49.90", key="key-1")
    assert retry.outcome is Outcome.PAID
    assert broken_invariants(clean_database) == []


async def test_many_requests_paying_the_same_orders_at_once_pay_each_order_exactly_once(
    clean_database: Engine, async_engine: AsyncEngine
) -> None:
    totals = ["10.00", "20.50", "30.99", "44.01"]
    order_ids = add_orders(clean_database, *totals)
    attempts = [(order_ids[i % 4], totals[i % 4]) for i in range(32)]

    outcomes = await asyncio.gather(
        *(pay_with(async_engine, order_id, total) for order_id, total in attempts),
        return_exceptions=True,
    )

    replies = [outcome for outcome in outcomes if isinstance(outcome, Reply)]
    assert len(replies) == 32, [o for o in outcomes if not isinstance(o, Reply)]
    payments = [paid(reply) for reply in replies if reply.outcome is Outcome.PAID]
    refusals = [reply for reply in replies if reply.outcome is Outcome.ORDER_NOT_PAYABLE]
    assert sorted(payment.order_id for payment in payments) == order_ids
    assert len(refusals) == 28, replies
    assert broken_invariants(clean_database) == []
    with clean_database.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM payments")).scalar_one() == 4
    trail = audit_rows(clean_database)
    assert sorted((r.outcome, r.payment_id) for r in trail if r.outcome == "paid") == sorted(
        ("paid", payment.id) for payment in payments
    )
    assert sum(r.outcome == "order_not_payable" for r in trail) == 28


# The round-trip budget: what the request path sends to the server, message by message.

ROUND_TRIP = re.compile(r"^F\t\d+\t(Query|Sync)\b", re.MULTILINE)
"""A message from the client after which it waits for the server's answer: a simple query,
or the end of an extended one (Parse, Bind, Describe, Execute, then Sync)."""


class Wire:
    """Every connection ``engine`` opens from now on, and libpq's trace of all that they send
    to the server for a while: whatever the pool sends too (a ping when it lends one, a
    rollback when it takes one back) is in it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.connections: list[AsyncConnection[Any]] = []
        self._fileno: int | None = None
        event.listen(engine.sync_engine, "connect", self._opened)

    def _opened(self, dbapi_connection: Any, record: Any) -> None:
        connection: AsyncConnection[Any] = dbapi_connection.driver_connection
        self.connections.append(connection)
        if self._fileno is not None:
            self._trace(connection, self._fileno)

    @staticmethod
    def _trace(connection: AsyncConnection[Any], fileno: int) -> None:
        connection.pgconn.trace(fileno)
        connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

    @contextmanager
    def traced(self, path: Path) -> Iterator[Path]:
        """Trace into ``path`` for the length of the block."""
        with path.open("wb") as trace:
            self._fileno = trace.fileno()
            for connection in self.connections:
                if not connection.closed:
                    self._trace(connection, self._fileno)
            try:
                yield path
            finally:
                self._fileno = None
                for connection in self.connections:  # libpq flushes, and lets go of the file
                    if not connection.closed:
                        connection.pgconn.untrace()


@pytest.mark.skipif(sys.platform != "linux", reason="psycopg traces libpq on Linux only")
@pytest.mark.parametrize(
    ("key", "retry"),
    [
        pytest.param(None, False, id="a payment without a key"),
        pytest.param("key-1", False, id="a payment with a key"),
        pytest.param("key-1", True, id="a retry replayed"),
    ],
)
async def test_an_uncontended_attempt_costs_two_round_trips_one_read_and_one_write(
    clean_database: Engine,
    async_engine: AsyncEngine,
    tmp_path: Path,
    key: str | None,
    retry: bool,
) -> None:
    [warm_up, order_id] = add_orders(clean_database, "10.00", "25.00")
    wire = Wire(async_engine)
    # A connection waits in the pool, as on a running service: opening one is not per request.
    await pay_with(async_engine, warm_up, "10.00")
    if retry:
        await pay_with(async_engine, order_id, "25.00", key=key)

    with wire.traced(tmp_path / "wire.trace") as trace:
        reply = await pay_with(async_engine, order_id, "25.00", key=key)

    assert reply.outcome is (Outcome.REPLAYED if retry else Outcome.PAID)
    sent = trace.read_text(errors="replace")
    assert ROUND_TRIP.findall(sent) == ["Sync", "Sync"], sent
    assert broken_invariants(clean_database) == []


@pytest.mark.skipif(sys.platform != "linux", reason="psycopg traces libpq on Linux only")
@pytest.mark.parametrize(
    ("key", "retry"),
    [
        pytest.param(None, False, id="a refund without a key"),
        pytest.param("refund-1", False, id="a refund with a key"),
        pytest.param("refund-1", True, id="a retry replayed"),
    ],
)
async def test_a_refund_costs_two_round_trips_too(
    clean_database: Engine,
    async_engine: AsyncEngine,
    tmp_path: Path,
    key: str | None,
    retry: bool,
) -> None:
    [warm_up, order_id] = add_orders(clean_database, "10.00", "25.00")
    wire = Wire(async_engine)
    await pay_with(async_engine, warm_up, "10.00")
    payment = paid(await pay_with(async_engine, order_id, "25.00"))
    assert payment.id is not None

    async def refund_once() -> RefundOutcome:
        uow = SqlAlchemyUnitOfWork(async_engine)
        reply = await refund(payment.id or 0, "5.00", key=key, uow=uow, clock=SystemClock())
        return reply.outcome

    if retry:
        await refund_once()
    with wire.traced(tmp_path / "wire.trace") as trace:
        outcome = await refund_once()

    assert outcome is (RefundOutcome.REPLAYED if retry else RefundOutcome.REFUNDED)
    sent = trace.read_text(errors="replace")
    assert ROUND_TRIP.findall(sent) == ["Sync", "Sync"], sent
    assert broken_invariants(clean_database) == []
