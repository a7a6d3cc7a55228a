"""What every adapter family must do for the domain's repositories and unit of work.

One abstract set of tests; each adapter family runs it by subclassing ``UnitOfWorkContract``
and saying how to make a unit of work, how to seed orders and how the order service changes
an order behind the payment service's back. The tests are async (anyio, on asyncio).

The unit of work reads what is committed now and stages its writes; ``commit()`` writes them
all at once, or none of them when a condition no longer holds: the order changed or paid
meanwhile (``OrderChanged``), the key stored meanwhile (``IdempotencyKeyTaken``), the order
already holding a succeeded payment (``OrderNotPayable``).
"""

from __future__ import annotations

import abc
import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import TracebackType
from typing import Self

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payment.domain.attempts import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    AuditRecord,
    Decision,
    IdempotencyRecord,
    Outcome,
    RecordedAnswer,
)
from payment.domain.delivery import OutboxEvent
from payment.domain.errors import (
    IdempotencyKeyTaken,
    OrderChanged,
    OrderNotPayable,
    PaymentChanged,
    RefundContention,
    TooMuchContention,
)
from payment.domain.events import AttemptDecided, Event, PaymentSucceeded
from payment.domain.messagebus import MessageBus
from payment.domain.model import MAX_ID, Money, Order, OrderStatus, Payment, PaymentStatus
from payment.domain.policy import PaymentPolicy
from payment.domain.ports import (
    AttemptGround,
    AuditTrail,
    EventLog,
    IdempotencyRepository,
    OrderRepository,
    PaymentRepository,
    RefundAuditTrail,
    RefundRepository,
    UnitOfWork,
)
from payment.domain.refunds import Refund, RefundGround, RefundOutcome
from payment.domain.services import MAX_DECISIONS, Reply
from tests.support.attempts import CALLER, REQUEST_ID, attempt, pay, plain_answer
from tests.support.refunds import refund

PAID_AT = datetime(2026, 11, 26, 10, 15, 0, 123456, tzinfo=UTC)
POLICY = PaymentPolicy()

KEY = "8f14e45f-ceea-467f-a0e6-6b8c1c0a9f11"
RETENTION = timedelta(hours=24)
FINGERPRINT = attempt(1, "10.00", key=KEY).fingerprint
OTHER_FINGERPRINT = attempt(2, "10.00", key=KEY).fingerprint
ANSWER = RecordedAnswer(200, '{"outcome": "paid", "payment_id": 1}')
OTHER_ANSWER = RecordedAnswer(409, '{"outcome": "order_not_payable", "payment_id": null}')
RECORD = IdempotencyRecord(FINGERPRINT, ANSWER)
OTHER_RECORD = IdempotencyRecord(OTHER_FINGERPRINT, OTHER_ANSWER)
MISSING_ORDER = MAX_ID
"""An order id no test seeds."""


class FixedClock:
    def __init__(self, moment: datetime = PAID_AT) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


def cents_text(cents: int) -> str:
    whole, fraction = divmod(cents, 100)
    return f"{whole}.{fraction:02d}"


def audit_record(order_id: int, outcome: Outcome, payment_id: int | None = None) -> AuditRecord:
    return AuditRecord(
        at=PAID_AT,
        request_id=REQUEST_ID,
        caller=CALLER,
        order_id=order_id,
        claimed_amount=Money(Decimal("10.00")),
        outcome=outcome,
        payment_id=payment_id,
        idempotency_key=KEY,
    )


@dataclass(frozen=True)
class Stored:
    """One order as a new unit of work reads it: the order, its payments, its audit trail."""

    order: Order | None
    payments: list[Payment]
    trail: list[AuditRecord]


Hook = Callable[[], Awaitable[None]]


async def nothing() -> None:
    return None


class Interrupted:
    """A unit of work on which something else happens before each read of the ground and
    before each commit: another request, or the order service, between the use case's read
    and its write. Counts the reads."""

    def __init__(
        self, inner: UnitOfWork, *, before_commit: Hook = nothing, before_read: Hook = nothing
    ) -> None:
        self._inner = inner
        self._before_commit = before_commit
        self._before_read = before_read
        self.reads = 0

    @property
    def orders(self) -> OrderRepository:
        return self._inner.orders

    @property
    def payments(self) -> PaymentRepository:
        return self._inner.payments

    @property
    def idempotency(self) -> IdempotencyRepository:
        return self._inner.idempotency

    @property
    def audit(self) -> AuditTrail:
        return self._inner.audit

    @property
    def events(self) -> EventLog:
        return self._inner.events

    @property
    def refunds(self) -> RefundRepository:
        return self._inner.refunds

    @property
    def refund_audit(self) -> RefundAuditTrail:
        return self._inner.refund_audit

    def collect_new_events(self) -> list[Event]:
        return self._inner.collect_new_events()

    async def refund_ground_for(
        self, payment_id: int, *, caller: str, key: str | None
    ) -> RefundGround:
        await self._before_read()
        self.reads += 1
        return await self._inner.refund_ground_for(payment_id, caller=caller, key=key)

    async def ground_for(self, order_id: int, *, caller: str, key: str | None) -> AttemptGround:
        await self._before_read()
        self.reads += 1
        return await self._inner.ground_for(order_id, caller=caller, key=key)

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)

    async def commit(self) -> None:
        await self._before_commit()
        await self._inner.commit()


class UnitOfWorkContract(abc.ABC):
    """The contract of ``OrderRepository``, ``PaymentRepository``, ``IdempotencyRepository``,
    ``AuditTrail`` and ``UnitOfWork``, and of the pay use case over them."""

    pytestmark = pytest.mark.anyio

    @abc.abstractmethod
    def unit_of_work_factory(self) -> Callable[[], UnitOfWork]:
        """Makes a new unit of work on this test's own, initially empty, store."""

    @abc.abstractmethod
    def add_orders(self, *totals: str, status: str = "pending") -> list[int]:
        """Store one committed order per total, as the order service would; their ids."""

    @abc.abstractmethod
    def change_order(
        self,
        order_id: int,
        *,
        status: str,
        total: str | None = None,
        paid_at: datetime | None = None,
    ) -> None:
        """Change a stored order as the order service would, committed at once: its status,
        its total when given, and its payment time."""

    def new_unit_of_work(self) -> UnitOfWork:
        return self.unit_of_work_factory()()

    async def read_order(self, order_id: int) -> Order | None:
        async with self.new_unit_of_work() as uow:
            return await uow.orders.get(order_id)

    async def stored(self, order_id: int) -> Stored:
        async with self.new_unit_of_work() as uow:
            return Stored(
                order=await uow.orders.get(order_id),
                payments=await uow.payments.list_for_order(order_id),
                trail=await uow.audit.list_for_order(order_id),
            )

    async def kept(self, key: str = KEY, *, caller: str = CALLER) -> IdempotencyRecord | None:
        async with self.new_unit_of_work() as uow:
            ground = await uow.ground_for(MISSING_ORDER, caller=caller, key=key)
        assert ground.order is None
        assert ground.payment_id is None
        return ground.kept

    @staticmethod
    def stage_payment(uow: UnitOfWork, ground: AttemptGround, at: datetime = PAID_AT) -> Payment:
        """Stage what paying the ground's order in full writes: the order's change and the
        payment with the id set aside for it."""
        order = ground.order
        assert order is not None
        assert ground.payment_id is not None
        payment = order.pay(order.total, at=at, policy=POLICY, payment_id=ground.payment_id)
        uow.orders.mark_paid(order)
        uow.payments.add(payment)
        return payment

    @staticmethod
    def stage_key(
        uow: UnitOfWork,
        record: IdempotencyRecord = RECORD,
        key: str = KEY,
        *,
        caller: str = CALLER,
    ) -> None:
        uow.idempotency.add(caller, key, record, at=PAID_AT, expires_at=PAID_AT + RETENTION)

    def stage_all(self, uow: UnitOfWork, ground: AttemptGround) -> Payment:
        """Stage every kind of write, as a paid attempt with a key does."""
        payment = self.stage_payment(uow, ground)
        assert payment.id is not None
        uow.audit.add(audit_record(payment.order_id, Outcome.PAID, payment.id))
        self.stage_key(uow)
        return payment

    async def pay_and_commit(self, order_id: int, at: datetime = PAID_AT) -> Payment:
        async with self.new_unit_of_work() as uow:
            ground = await uow.ground_for(order_id, caller=CALLER, key=None)
            payment = self.stage_payment(uow, ground, at=at)
            await uow.commit()
        return payment

    async def keep_and_commit(
        self, record: IdempotencyRecord = RECORD, key: str = KEY, *, caller: str = CALLER
    ) -> None:
        async with self.new_unit_of_work() as uow:
            self.stage_key(uow, record, key, caller=caller)
            await uow.commit()

    # OrderRepository.get

    async def test_get_finds_nothing_for_a_missing_order(self) -> None:
        [order_id] = self.add_orders("10.00")

        assert await self.read_order(order_id + 1) is None

    @pytest.mark.parametrize("status", ["pending", "cancelled", "refunded", "paid"])
    async def test_get_returns_the_order_as_stored_whatever_its_status(self, status: str) -> None:
        [order_id, _] = self.add_orders("10.50", "20.00", status=status)

        order = await self.read_order(order_id)

        assert order == Order(id=order_id, status=status, total=Money(Decimal("10.50")))
        assert order is not None
        assert type(order.total.amount) is Decimal

    async def test_get_sees_a_committed_payment(self) -> None:
        [order_id] = self.add_orders("199.99")
        await self.pay_and_commit(order_id)

        order = await self.read_order(order_id)

        assert order == Order(
            id=order_id, status=OrderStatus.PAID, total=Money(Decimal("199.99")), paid_at=PAID_AT
        )
        assert order is not None
        assert order.paid_at is not None
        assert order.paid_at.tzinfo is UTC

    # UnitOfWork.ground_for

    @pytest.mark.parametrize("key", [None, KEY], ids=["without a key", "with a new key"])
    async def test_the_ground_of_a_pending_order_is_the_order_and_a_payment_id_set_aside(
        self, key: str | None
    ) -> None:
        [order_id] = self.add_orders("10.50")

        async with self.new_unit_of_work() as uow:
            ground = await uow.ground_for(order_id, caller=CALLER, key=key)

        assert ground.order == Order(
            id=order_id, status=OrderStatus.PENDING, total=Money(Decimal("10.50"))
        )
        assert ground.kept is None
        assert isinstance(ground.payment_id, int)
        assert ground.payment_id > 0

    @pytest.mark.parametrize("status", ["cancelled", "refunded", "paid"])
    async def test_the_ground_of_an_order_that_is_not_pending_sets_no_payment_id_aside(
        self, status: str
    ) -> None:
        [order_id] = self.add_orders("10.00", status=status)

        async with self.new_unit_of_work() as uow:
            ground = await uow.ground_for(order_id, caller=CALLER, key=KEY)

        assert ground == AttemptGround(
            order=Order(id=order_id, status=status, total=Money(Decimal("10.00")))
        )

    @pytest.mark.parametrize("key", [None, KEY], ids=["without a key", "with a new key"])
    async def test_the_ground_of_a_missing_order_has_no_order_and_no_payment_id(
        self, key: str | None
    ) -> None:
        [order_id] = self.add_orders("10.00")

        async with self.new_unit_of_work() as uow:
            ground = await uow.ground_for(order_id + 1, caller=CALLER, key=key)

        assert ground == AttemptGround(order=None, kept=None, payment_id=None)

    async def test_the_ground_of_a_used_key_is_its_kept_record_and_no_payment_id(self) -> None:
        [order_id] = self.add_orders("10.00")
        await self.keep_and_commit(RECORD)

        async with self.new_unit_of_work() as uow:
            ground = await uow.ground_for(order_id, caller=CALLER, key=KEY)
            without_order = await uow.ground_for(order_id + 1, caller=CALLER, key=KEY)

        assert ground == AttemptGround(
            order=Order(id=order_id, status=OrderStatus.PENDING, total=Money(Decimal("10.00"))),
            kept=RECORD,
            payment_id=None,
        )
        assert without_order == AttemptGround(order=None, kept=RECORD, payment_id=None)

    async def test_payment_ids_set_aside_are_never_handed_out_twice(self) -> None:
        order_ids = self.add_orders("1.00", "2.00", "3.00")

        ids: list[int | None] = []
        for order_id in [*order_ids, order_ids[0]]:
            async with self.new_unit_of_work() as uow:
                ids.append((await uow.ground_for(order_id, caller=CALLER, key=None)).payment_id)
                ids.append(await uow.payments.next_id())

        assert None not in ids
        assert len(set(ids)) == len(ids) == 8

    async def test_a_second_read_in_a_unit_of_work_sees_what_was_committed_meanwhile(
        self,
    ) -> None:
        [order_id] = self.add_orders("10.00")

        async with self.new_unit_of_work() as uow:
            before = await uow.ground_for(order_id, caller=CALLER, key=KEY)
            payment = await self.pay_and_commit(order_id)
            await self.keep_and_commit(RECORD)
            after = await uow.ground_for(order_id, caller=CALLER, key=KEY)

        assert before.order is not None
        assert before.order.status == OrderStatus.PENDING
        assert (before.kept, before.payment_id is None) == (None, False)
        assert after == AttemptGround(
            order=Order(
                id=order_id,
                status=OrderStatus.PAID,
                total=Money(Decimal("10.00")),
                paid_at=payment.created_at,
            ),
            kept=RECORD,
            payment_id=None,
        )

    # IdempotencyRepository, read back through ground_for

    async def test_a_new_key_has_nothing_kept(self) -> None:
        assert await self.kept() is None

    async def test_a_key_committed_with_its_answer_is_kept_with_its_first_request(self) -> None:
        await self.keep_and_commit(RECORD)

        assert await self.kept() == RECORD

    async def test_a_key_is_kept_once_and_a_second_commit_of_it_is_refused_as_taken(
        self,
    ) -> None:
        await self.keep_and_commit(RECORD)

        with pytest.raises(IdempotencyKeyTaken):
            await self.keep_and_commit(OTHER_RECORD)

        assert await self.kept() == RECORD

    async def test_keys_are_scoped_by_caller(self) -> None:
        await self.keep_and_commit(RECORD, caller="shop-a")

        await self.keep_and_commit(OTHER_RECORD, caller="shop-b")

        assert await self.kept(caller="shop-a") == RECORD
        assert await self.kept(caller="shop-b") == OTHER_RECORD
        assert await self.kept(caller="shop-c") is None

    async def test_different_keys_of_one_caller_are_kept_separately(self) -> None:
        await self.keep_and_commit(RECORD, key="key-1")

        assert await self.kept("key-2") is None
        await self.keep_and_commit(OTHER_RECORD, key="key-2")
        assert await self.kept("key-1") == RECORD
        assert await self.kept("key-2") == OTHER_RECORD

    async def test_the_longest_key_and_a_large_answer_round_trip(self) -> None:
        key = "~" * MAX_IDEMPOTENCY_KEY_LENGTH
        record = IdempotencyRecord(
            FINGERPRINT, RecordedAnswer(422, '{"detail": "' + "é" * 10_000 + '"}')
        )
        await self.keep_and_commit(record, key=key)

        assert await self.kept(key) == record
        assert await self.kept(key[:-1]) is None

    # Staged writes

    async def test_staged_writes_are_invisible_until_the_commit_then_seen_together(
        self,
    ) -> None:
        [order_id] = self.add_orders("10.00")

        async with self.new_unit_of_work() as uow:
            ground = await uow.ground_for(order_id, caller=CALLER, key=KEY)
            payment = self.stage_all(uow, ground)
            assert payment.id is not None
            inside = Stored(
                order=await uow.orders.get(order_id),
                payments=await uow.payments.list_for_order(order_id),
                trail=await uow.audit.list_for_order(order_id),
            )
            inside_payment = await uow.payments.get(payment.id)
            inside_ground = await uow.ground_for(order_id, caller=CALLER, key=KEY)
            elsewhere = await self.stored(order_id)
            kept_elsewhere = await self.kept()
            await uow.commit()

        pending = Order(id=order_id, status=OrderStatus.PENDING, total=Money(Decimal("10.00")))
        nothing_yet = Stored(order=pending, payments=[], trail=[])
        assert inside == elsewhere == nothing_yet
        assert inside_payment is None
        assert inside_ground.order == pending
        assert inside_ground.kept is kept_elsewhere is None
        assert await self.stored(order_id) == Stored(
            order=replace(pending, status=OrderStatus.PAID, paid_at=PAID_AT),
            payments=[payment],
            trail=[audit_record(order_id, Outcome.PAID, payment.id)],
        )
        assert await self.kept() == RECORD

    async def test_leaving_without_commit_drops_every_staged_write(self) -> None:
        [order_id] = self.add_orders("10.00")
        before = await self.stored(order_id)
        uow = self.new_unit_of_work()

        async with uow:
            ground = await uow.ground_for(order_id, caller=CALLER, key=KEY)
            payment = self.stage_all(uow, ground)
        async with uow:  # the same unit of work again: nothing is left staged in it
            await uow.commit()

        assert payment.id is not None
        assert await self.stored(order_id) == before
        assert await self.kept() is None
        async with self.new_unit_of_work() as reader:
            assert await reader.payments.get(payment.id) is None

    async def test_an_error_inside_the_unit_of_work_drops_the_staged_writes(self) -> None:
        [order_id] = self.add_orders("10.00")
        before = await self.stored(order_id)

        async def stage_then_fail() -> None:
            async with self.new_unit_of_work() as uow:
                ground = await uow.ground_for(order_id, caller=CALLER, key=KEY)
                self.stage_all(uow, ground)
                raise RuntimeError("after the writes")

        with pytest.raises(RuntimeError, match="after the writes"):
            await stage_then_fail()

        assert await self.stored(order_id) == before
        assert await self.kept() is None

    async def test_what_was_committed_stays_when_an_error_follows(self) -> None:
        [order_id] = self.add_orders("10.00")

        committed: list[Payment] = []

        async def commit_then_fail() -> None:
            async with self.new_unit_of_work() as uow:
                ground = await uow.ground_for(order_id, caller=CALLER, key=KEY)
                committed.append(self.stage_all(uow, ground))
                await uow.commit()
                raise RuntimeError("after the commit")

        with pytest.raises(RuntimeError, match="after the commit"):
            await commit_then_fail()

        after = await self.stored(order_id)
        assert after.order is not None
        assert after.order.status == OrderStatus.PAID
        assert after.payments == committed
        assert len(committed) == 1
        assert len(after.trail) == 1
        assert await self.kept() == RECORD

    async def test_a_commit_writes_what_was_staged_once_and_then_starts_afresh(self) -> None:
        [order_id] = self.add_orders("10.00")
        first = audit_record(order_id, Outcome.AMOUNT_MISMATCH)
        second = replace(first, request_id="second", outcome=Outcome.ORDER_NOT_PAYABLE)

        async with self.new_unit_of_work() as uow:
            uow.audit.add(first)
            await uow.commit()
            await uow.commit()
            uow.audit.add(second)
            await uow.commit()

        assert (await self.stored(order_id)).trail == [first, second]

    async def test_a_refused_commit_drops_its_writes_and_a_later_commit_writes_only_its_own(
        self,
    ) -> None:
        [order_id] = self.add_orders("10.00")
        refusal = audit_record(order_id, Outcome.ORDER_NOT_PAYABLE)

        async with self.new_unit_of_work() as uow:
            ground = await uow.ground_for(order_id, caller=CALLER, key=KEY)
            self.stage_all(uow, ground)
            self.change_order(order_id, status="cancelled")
            with pytest.raises(OrderChanged):
                await uow.commit()
            uow.audit.add(refusal)
            await uow.commit()

        assert await self.stored(order_id) == Stored(
            order=Order(id=order_id, status="cancelled", total=Money(Decimal("10.00"))),
            payments=[],
            trail=[refusal],
        )
        assert await self.kept() is None

    # PaymentRepository

    async def test_a_committed_payment_and_the_paid_order_are_seen_by_a_new_unit_of_work(
        self,
    ) -> None:
        [order_id, other_id] = self.add_orders("199.99", "5.00")

        payment = await self.pay_and_commit(order_id)

        assert payment.id is not None
        assert await self.read_order(order_id) == Order(
            id=order_id, status=OrderStatus.PAID, total=Money(Decimal("199.99")), paid_at=PAID_AT
        )
        async with self.new_unit_of_work() as uow:
            assert await uow.payments.get(payment.id) == payment
            assert await uow.payments.list_for_order(order_id) == [payment]
            assert await uow.payments.list_for_order(other_id) == []
        other = await self.read_order(other_id)
        assert other is not None
        assert other.status == OrderStatus.PENDING

    async def test_the_stored_payment_is_the_one_that_was_added(self) -> None:
        [order_id] = self.add_orders("42.00")

        payment = await self.pay_and_commit(order_id)

        assert payment == Payment(
            order_id=order_id,
            amount=Money(Decimal("42.00")),
            created_at=PAID_AT,
            status=PaymentStatus.SUCCEEDED,
            id=payment.id,
        )
        assert payment.id is not None
        async with self.new_unit_of_work() as uow:
            assert await uow.payments.get(payment.id) == payment

    async def test_a_payment_is_added_only_with_the_id_set_aside_for_it(self) -> None:
        [order_id] = self.add_orders("42.00")
        payment = Payment(order_id=order_id, amount=Money(Decimal("42.00")), created_at=PAID_AT)

        async with self.new_unit_of_work() as uow:
            with pytest.raises(ValueError, match="id"):
                uow.payments.add(payment)
            await uow.commit()

        assert (await self.stored(order_id)).payments == []

    async def test_payments_get_finds_nothing_for_a_missing_id(self) -> None:
        [order_id] = self.add_orders("10.00")
        payment = await self.pay_and_commit(order_id)
        assert payment.id is not None

        async with self.new_unit_of_work() as uow:
            assert await uow.payments.get(payment.id + 1) is None

    async def test_each_payment_gets_its_own_id(self) -> None:
        order_ids = self.add_orders("1.00", "2.00", "3.00")

        payments = [await self.pay_and_commit(order_id) for order_id in order_ids]

        ids = [payment.id for payment in payments]
        assert None not in ids
        assert len(set(ids)) == len(ids)
        async with self.new_unit_of_work() as uow:
            for payment in payments:
                assert payment.id is not None
                assert await uow.payments.get(payment.id) == payment

    async def test_list_for_order_gives_only_that_orders_payments(self) -> None:
        order_ids = self.add_orders("1.00", "2.00", "3.00")
        moments = [PAID_AT + timedelta(minutes=m) for m in (5, 0, 10)]
        payments = {
            order_id: await self.pay_and_commit(order_id, at=moment)
            for order_id, moment in zip(order_ids, moments, strict=True)
        }

        async with self.new_unit_of_work() as uow:
            listed = {
                order_id: await uow.payments.list_for_order(order_id) for order_id in order_ids
            }

        assert listed == {order_id: [payment] for order_id, payment in payments.items()}

    @pytest.mark.parametrize(
        "moment",
        [
            datetime(2026, 11, 26, 10, 15, 0, 123456, tzinfo=UTC),
            datetime(2026, 11, 26, 10, 15, 0, 1, tzinfo=UTC),
            datetime(
                2026, 3, 29, 1, 30, 59, 999999, tzinfo=timezone(timedelta(hours=5, minutes=30))
            ),
            datetime(1999, 12, 31, 23, 59, 59, 500000, tzinfo=timezone(timedelta(hours=-8))),
        ],
    )
    async def test_times_come_back_aware_utc_and_equal_to_the_microsecond(
        self, moment: datetime
    ) -> None:
        [order_id] = self.add_orders("10.00")

        payment = await self.pay_and_commit(order_id, at=moment)

        assert payment.id is not None
        async with self.new_unit_of_work() as uow:
            stored = await uow.payments.get(payment.id)
            order = await uow.orders.get(order_id)
        assert stored is not None
        assert order is not None
        assert order.paid_at is not None
        for came_back in (stored.created_at, order.paid_at):
            assert came_back == moment
            assert came_back.tzinfo is UTC
            assert came_back.microsecond == moment.microsecond

    @pytest.mark.parametrize("total", ["0.01", "0.10", "1", "12345.6", "99999999.99"])
    async def test_amounts_come_back_as_exact_decimals_of_scale_two(self, total: str) -> None:
        [order_id] = self.add_orders(total)

        payment = await self.pay_and_commit(order_id)

        assert payment.id is not None
        async with self.new_unit_of_work() as uow:
            stored = await uow.payments.get(payment.id)
            order = await uow.orders.get(order_id)
        assert stored is not None
        assert order is not None
        for amount in (stored.amount.amount, order.total.amount):
            assert type(amount) is Decimal
            assert amount == Decimal(total)
            assert amount.as_tuple().exponent == -2

    @settings(
        max_examples=25,
        deadline=None,
        # Each example seeds an order of its own, so the per-test store need not be fresh; and
        # every adapter family runs this same property, so a saved example suits any of them.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(cents=st.integers(min_value=1, max_value=9_999_999_999))
    async def test_every_amount_in_range_round_trips_exactly(self, cents: int) -> None:
        total = cents_text(cents)
        [order_id] = self.add_orders(total)

        payment = await self.pay_and_commit(order_id)

        assert payment.id is not None
        async with self.new_unit_of_work() as uow:
            stored = await uow.payments.get(payment.id)
            ground = await uow.ground_for(order_id, caller=CALLER, key=None)
        assert stored is not None
        assert stored.amount.amount.as_tuple() == Decimal(total).as_tuple()
        assert ground.order is not None
        assert ground.order.total.amount.as_tuple() == Decimal(total).as_tuple()

    # The commit's conditions: each refusal writes nothing at all

    async def test_the_guard_refuses_an_order_paid_meanwhile_and_nothing_is_written(
        self,
    ) -> None:
        [order_id] = self.add_orders("10.00")
        later = PAID_AT + timedelta(seconds=1)

        async with self.new_unit_of_work() as uow:
            ground = await uow.ground_for(order_id, caller=CALLER, key=KEY)
            first = await self.pay_and_commit(order_id, at=later)
            self.stage_all(uow, ground)
            with pytest.raises(OrderChanged):
                await uow.commit()

        assert await self.stored(order_id) == Stored(
            order=Order(
                id=order_id, status=OrderStatus.PAID, total=Money(Decimal("10.00")), paid_at=later
            ),
            payments=[first],
            trail=[],
        )
        assert await self.kept() is None

    @pytest.mark.parametrize(
        ("status", "total"),
        [
            pytest.param("pending", "10.01", id="its total changed"),
            pytest.param("cancelled", None, id="cancelled"),
            pytest.param("paid", None, id="marked paid elsewhere"),
        ],
    )
    async def test_the_guard_refuses_an_order_changed_meanwhile_and_nothing_is_written(
        self, status: str, total: str | None
    ) -> None:
        [order_id] = self.add_orders("10.00")

        async with self.new_unit_of_work() as uow:
            ground = await uow.ground_for(order_id, caller=CALLER, key=KEY)
            self.change_order(order_id, status=status, total=total)
            self.stage_all(uow, ground)
            with pytest.raises(OrderChanged):
                await uow.commit()

        assert await self.stored(order_id) == Stored(
            order=Order(id=order_id, status=status, total=Money(Decimal(total or "10.00"))),
            payments=[],
            trail=[],
        )
        assert await self.kept() is None

    @pytest.mark.parametrize("paying", [True, False], ids=["with a payment", "with a refusal"])
    async def test_a_key_stored_meanwhile_is_refused_as_taken_and_nothing_is_written(
        self, paying: bool
    ) -> None:
        [order_id] = self.add_orders("10.00")

        async with self.new_unit_of_work() as uow:
            ground = await uow.ground_for(order_id, caller=CALLER, key=KEY)
            await self.keep_and_commit(OTHER_RECORD)
            if paying:
                self.stage_all(uow, ground)
            else:
                uow.audit.add(audit_record(order_id, Outcome.AMOUNT_MISMATCH))
                self.stage_key(uow)
            with pytest.raises(IdempotencyKeyTaken):
                await uow.commit()

        assert await self.stored(order_id) == Stored(
            order=Order(id=order_id, status=OrderStatus.PENDING, total=Money(Decimal("10.00"))),
            payments=[],
            trail=[],
        )
        assert await self.kept() == OTHER_RECORD

    async def test_a_second_succeeded_payment_is_refused_as_not_payable_and_nothing_is_written(
        self,
    ) -> None:
        [order_id] = self.add_orders("10.00")
        first = await self.pay_and_commit(order_id)
        # The order service sets the order back to pending behind the payment service's back.
        self.change_order(order_id, status=OrderStatus.PENDING)

        async with self.new_unit_of_work() as uow:
            ground = await uow.ground_for(order_id, caller=CALLER, key=KEY)
            self.stage_all(uow, ground)
            with pytest.raises(OrderNotPayable) as refused:
                await uow.commit()

        assert (refused.value.order_id, refused.value.status) == (order_id, OrderStatus.PAID)
        assert await self.stored(order_id) == Stored(
            order=Order(id=order_id, status=OrderStatus.PENDING, total=Money(Decimal("10.00"))),
            payments=[first],
            trail=[],
        )
        assert await self.kept() is None

    # AuditTrail

    async def test_the_audit_trail_lists_an_orders_records_in_commit_order_with_every_field(
        self,
    ) -> None:
        [order_id, other_id] = self.add_orders("10.00", "20.00")
        payment = await self.pay_and_commit(order_id)
        india = timezone(timedelta(hours=5, minutes=30))
        records = [
            AuditRecord(
                at=datetime(2026, 11, 26, 15, 45, 0, 1, tzinfo=india),
                request_id="r" * 128,
                caller="c" * 100,
                order_id=order_id,
                claimed_amount=Money(Decimal("99999999.99")),
                outcome=Outcome.AMOUNT_MISMATCH,
                idempotency_key="~" * MAX_IDEMPOTENCY_KEY_LENGTH,
            ),
            AuditRecord(
                at=PAID_AT,
                request_id="request-2",
                caller=CALLER,
                order_id=order_id,
                claimed_amount=Money(Decimal("10.00")),
                outcome=Outcome.PAID,
                payment_id=payment.id,
                idempotency_key="key-2",
            ),
        ] + [
            # Earlier than the ones before: the trail keeps the order of commits, not of time.
            AuditRecord(
                at=PAID_AT - timedelta(days=1, microseconds=index),
                request_id=f"request-{outcome}",
                caller=CALLER,
                order_id=order_id,
                claimed_amount=Money(Decimal("0.01")),
                outcome=outcome,
            )
            for index, outcome in enumerate(Outcome)
        ]
        elsewhere = replace(records[1], order_id=other_id, payment_id=None)

        # One commit per attempt, as the use case writes them; the first holds two records.
        for batch in [[records[0], elsewhere], *[[record] for record in records[1:]]]:
            async with self.new_unit_of_work() as uow:
                for record in batch:
                    uow.audit.add(record)
                await uow.commit()

        async with self.new_unit_of_work() as uow:
            listed = await uow.audit.list_for_order(order_id)
            listed_elsewhere = await uow.audit.list_for_order(other_id)
            missing_order = await uow.audit.list_for_order(other_id + 1)
        assert listed == records
        assert listed_elsewhere == [elsewhere]
        assert missing_order == []
        for record in listed:
            assert record.at.tzinfo is UTC
            assert type(record.claimed_amount.amount) is Decimal
            assert type(record.outcome) is Outcome
        assert listed[0].at == datetime(2026, 11, 26, 10, 15, 0, 1, tzinfo=UTC)
        assert listed[0].claimed_amount.amount.as_tuple() == Decimal("99999999.99").as_tuple()

    # The pay use case on this adapter family

    async def test_a_retry_with_the_same_key_is_replayed_and_pays_once(self) -> None:
        [order_id] = self.add_orders("42.00")
        factory = self.unit_of_work_factory()

        first = await pay(order_id, "42.00", key=KEY, uow=factory(), clock=FixedClock())
        retry = await pay(order_id, "42.00", key=KEY, uow=factory(), clock=FixedClock())

        assert first.outcome is Outcome.PAID
        assert first.payment is not None
        assert first.answer.status == 200
        assert retry.replayed
        assert retry.answer == first.answer
        assert retry.payment is None
        stored = await self.stored(order_id)
        assert stored.payments == [first.payment]
        assert [(r.outcome, r.payment_id, r.idempotency_key) for r in stored.trail] == [
            (Outcome.PAID, first.payment.id, KEY),
            (Outcome.REPLAYED, None, KEY),
        ]

    async def test_a_refusal_is_kept_for_its_key_and_replayed(self) -> None:
        [order_id] = self.add_orders("42.00")
        factory = self.unit_of_work_factory()

        refused = await pay(order_id, "41.99", key=KEY, uow=factory(), clock=FixedClock())
        retry = await pay(order_id, "41.99", key=KEY, uow=factory(), clock=FixedClock())

        assert refused.outcome is Outcome.AMOUNT_MISMATCH
        assert refused.answer == plain_answer(Decision(Outcome.AMOUNT_MISMATCH))
        assert retry.replayed
        assert retry.answer == refused.answer
        order = await self.read_order(order_id)
        assert order is not None
        assert order.status == OrderStatus.PENDING

    async def test_the_same_key_with_another_request_is_refused_as_reused_and_pays_nothing(
        self,
    ) -> None:
        [order_id, other_id] = self.add_orders("42.00", "43.00")
        factory = self.unit_of_work_factory()
        refused = await pay(order_id, "41.99", key=KEY, uow=factory(), clock=FixedClock())

        reused = await pay(other_id, "43.00", key=KEY, uow=factory(), clock=FixedClock())

        assert reused.outcome is Outcome.IDEMPOTENCY_KEY_REUSED
        assert reused.answer.status == 422
        assert not reused.replayed

        other = await self.stored(other_id)
        assert other.payments == []
        assert [r.outcome for r in other.trail] == [Outcome.IDEMPOTENCY_KEY_REUSED]
        assert await self.kept() == IdempotencyRecord(
            attempt(order_id, "41.99", key=KEY).fingerprint, refused.answer
        )

    async def test_the_same_key_from_another_caller_pays_its_own_order(self) -> None:
        [order_id, other_id] = self.add_orders("42.00", "43.00")
        factory = self.unit_of_work_factory()
        await pay(order_id, "42.00", key=KEY, caller="shop-a", uow=factory(), clock=FixedClock())

        other = await pay(
            other_id, "43.00", key=KEY, caller="shop-b", uow=factory(), clock=FixedClock()
        )

        assert other.outcome is Outcome.PAID
        assert other.payment is not None
        assert other.payment.order_id == other_id

    async def test_an_attempt_whose_order_is_paid_meanwhile_is_decided_again_and_refused(
        self,
    ) -> None:
        [order_id] = self.add_orders("42.00")
        factory = self.unit_of_work_factory()
        others: list[Reply] = []

        async def another_request_pays() -> None:
            if not others:
                others.append(
                    await pay(
                        order_id, "42.00", request_id="other", uow=factory(), clock=FixedClock()
                    )
                )

        uow = Interrupted(factory(), before_commit=another_request_pays)
        reply = await pay(order_id, "42.00", uow=uow, clock=FixedClock())

        [other] = others
        assert other.outcome is Outcome.PAID
        assert other.payment is not None
        assert reply.outcome is Outcome.ORDER_NOT_PAYABLE
        assert reply.payment is None
        assert reply.answer == plain_answer(Decision(Outcome.ORDER_NOT_PAYABLE))
        assert uow.reads == 2
        stored = await self.stored(order_id)
        assert stored.payments == [other.payment]
        assert [(r.request_id, r.outcome, r.payment_id) for r in stored.trail] == [
            ("other", Outcome.PAID, other.payment.id),
            (REQUEST_ID, Outcome.ORDER_NOT_PAYABLE, None),
        ]

    @pytest.mark.parametrize(
        ("amount", "outcome"),
        [
            pytest.param("42.00", Outcome.PAID, id="a payment"),
            pytest.param("41.99", Outcome.AMOUNT_MISMATCH, id="a refusal"),
        ],
    )
    async def test_an_attempt_whose_key_is_used_meanwhile_by_the_same_request_gets_its_answer(
        self, amount: str, outcome: Outcome
    ) -> None:
        [order_id] = self.add_orders("42.00")
        factory = self.unit_of_work_factory()
        others: list[Reply] = []

        async def the_same_request_commits_first() -> None:
            if not others:
                others.append(
                    await pay(
                        order_id,
                        amount,
                        key=KEY,
                        request_id="other",
                        uow=factory(),
                        clock=FixedClock(),
                    )
                )

        uow = Interrupted(factory(), before_commit=the_same_request_commits_first)
        reply = await pay(order_id, amount, key=KEY, uow=uow, clock=FixedClock())

        [other] = others
        assert other.outcome is outcome
        assert reply.replayed
        assert reply.answer == other.answer
        assert uow.reads == 2
        stored = await self.stored(order_id)
        assert stored.payments == ([] if other.payment is None else [other.payment])
        assert [(r.request_id, r.outcome) for r in stored.trail] == [
            ("other", outcome),
            (REQUEST_ID, Outcome.REPLAYED),
        ]
        assert await self.kept() == IdempotencyRecord(
            attempt(order_id, amount, key=KEY).fingerprint, other.answer
        )

    async def test_an_order_that_never_holds_still_ends_in_too_much_contention_writing_nothing(
        self,
    ) -> None:
        [order_id] = self.add_orders("42.00")

        async def back_to_its_total() -> None:
            self.change_order(order_id, status=OrderStatus.PENDING, total="42.00")

        async def a_new_total() -> None:
            self.change_order(order_id, status=OrderStatus.PENDING, total="43.00")

        uow = Interrupted(
            self.new_unit_of_work(), before_read=back_to_its_total, before_commit=a_new_total
        )
        with pytest.raises(TooMuchContention) as contention:
            await pay(order_id, "42.00", key=KEY, uow=uow, clock=FixedClock())

        assert contention.value.order_id == order_id
        assert uow.reads == MAX_DECISIONS
        assert await self.stored(order_id) == Stored(
            order=Order(id=order_id, status=OrderStatus.PENDING, total=Money(Decimal("43.00"))),
            payments=[],
            trail=[],
        )
        assert await self.kept() is None

    async def test_concurrent_payments_of_one_order_make_exactly_one_payment(self) -> None:
        [order_id] = self.add_orders("75.25")
        factory = self.unit_of_work_factory()
        attempts = 8

        outcomes = await asyncio.gather(
            *(
                pay(order_id, "75.25", uow=factory(), clock=FixedClock(), request_id=f"r{n}")
                for n in range(attempts)
            ),
            return_exceptions=True,
        )

        replies = [o for o in outcomes if isinstance(o, Reply)]
        assert len(replies) == attempts, outcomes
        paid = [o.payment for o in replies if o.outcome is Outcome.PAID]
        refused = [o for o in replies if o.outcome is Outcome.ORDER_NOT_PAYABLE]
        assert len(paid) == 1, outcomes
        assert len(refused) == attempts - 1, outcomes
        stored = await self.stored(order_id)
        assert stored.payments == paid
        assert sorted(record.outcome for record in stored.trail) == sorted(
            [Outcome.PAID] + [Outcome.ORDER_NOT_PAYABLE] * (attempts - 1)
        )
        assert [told_of(event) for event in await self.outbox()] == [
            ("payment.succeeded", paid[0].id if paid[0] is not None else None)
        ]

    async def test_concurrent_attempts_with_one_key_pay_once_and_all_get_its_answer(
        self,
    ) -> None:
        [order_id] = self.add_orders("75.25")
        factory = self.unit_of_work_factory()
        attempts = 8

        outcomes = await asyncio.gather(
            *(
                pay(order_id, "75.25", key=KEY, uow=factory(), clock=FixedClock())
                for _ in range(attempts)
            ),
            return_exceptions=True,
        )

        replies = [o for o in outcomes if isinstance(o, Reply)]
        assert len(replies) == attempts, outcomes
        [first] = [reply for reply in replies if not reply.replayed]
        assert first.outcome is Outcome.PAID
        assert first.payment is not None
        assert all(reply.answer == first.answer for reply in replies)
        stored = await self.stored(order_id)
        assert stored.payments == [first.payment]
        assert sorted(record.outcome for record in stored.trail) == sorted(
            [Outcome.PAID] + [Outcome.REPLAYED] * (attempts - 1)
        )

    # The outbox: one event per committed payment, in the payment's own commit

    async def outbox(self) -> list[OutboxEvent]:
        async with self.new_unit_of_work() as uow:
            return await uow.events.after(0, limit=1000)

    async def test_a_committed_payment_writes_its_payment_succeeded_cloud_event(self) -> None:
        [order_id] = self.add_orders("10.00")

        async with self.new_unit_of_work() as uow:
            ground = await uow.ground_for(order_id, caller=CALLER, key=None)
            payment = self.stage_payment(uow, ground)
            assert uow.collect_new_events() == []
            await uow.commit()
            assert uow.collect_new_events() == [PaymentSucceeded.of(payment)]
            assert uow.collect_new_events() == []

        [event] = await self.outbox()
        body = json.loads(event.body)
        assert body == {
            "specversion": "1.0",
            "id": event.event_id,
            "source": "/payment-service",
            "type": "payment.succeeded",
            "subject": str(order_id),
            "time": "2026-11-26T10:15:00.123456Z",
            "datacontenttype": "application/json",
            "data": {
                "order_id": order_id,
                "payment_id": payment.id,
                "amount": "10.00",
                "created_at": "2026-11-26T10:15:00.123456Z",
            },
        }
        assert str(uuid.UUID(event.event_id)) == event.event_id
        assert (event.type, event.subject, event.attempts) == (
            "payment.succeeded",
            str(order_id),
            0,
        )
        assert event.delivered_to == frozenset()
        assert event.created_at == PAID_AT
        async with self.new_unit_of_work() as uow:
            assert await uow.events.get(event.event_id) == event
            assert await uow.events.get(str(uuid.uuid4())) is None

    async def test_refusals_replays_and_refused_commits_write_no_event(self) -> None:
        [paid_id, pending_id] = self.add_orders("42.00", "43.00")
        factory = self.unit_of_work_factory()
        first = await pay(paid_id, "42.00", key=KEY, uow=factory(), clock=FixedClock())
        assert first.payment is not None

        refusals = [
            await pay(paid_id, "42.00", key=KEY, uow=factory(), clock=FixedClock()),
            await pay(paid_id, "42.00", uow=factory(), clock=FixedClock()),
            await pay(pending_id, "43.01", uow=factory(), clock=FixedClock()),
            await pay(MISSING_ORDER, "1.00", uow=factory(), clock=FixedClock()),
        ]
        async with self.new_unit_of_work() as uow:
            ground = await uow.ground_for(pending_id, caller=CALLER, key=None)
            self.change_order(pending_id, status="cancelled")
            self.stage_payment(uow, ground)
            with pytest.raises(OrderChanged):
                await uow.commit()
            assert uow.collect_new_events() == []

        assert [reply.outcome for reply in refusals] == [
            Outcome.REPLAYED,
            Outcome.ORDER_NOT_PAYABLE,
            Outcome.AMOUNT_MISMATCH,
            Outcome.ORDER_NOT_FOUND,
        ]
        assert [told_of(event) for event in await self.outbox()] == [
            ("payment.succeeded", first.payment.id)
        ]

    async def test_events_are_read_in_the_order_they_were_written_a_page_at_a_time(
        self,
    ) -> None:
        order_ids = self.add_orders("1.00", "2.00", "3.00")
        payments = [await self.pay_and_commit(order_id) for order_id in order_ids]

        async with self.new_unit_of_work() as uow:
            page = await uow.events.after(0, limit=2)
            rest = await uow.events.after(page[-1].position, limit=2)
            after_all = await uow.events.after(rest[-1].position, limit=2)

        assert [told_of(e) for e in page + rest] == [("payment.succeeded", p.id) for p in payments]
        assert [e.subject for e in page + rest] == [str(order_id) for order_id in order_ids]
        positions = [e.position for e in page + rest]
        assert positions == sorted(positions)
        assert len(set(positions)) == 3
        assert after_all == []

    async def test_the_bus_gets_the_payment_and_the_decision_after_the_commit(self) -> None:
        [order_id] = self.add_orders("42.00")
        factory = self.unit_of_work_factory()
        seen: list[Event] = []
        bus = MessageBus()
        bus.subscribe(Event, seen.append)

        paid = await pay(order_id, "42.00", uow=factory(), clock=FixedClock(), bus=bus)
        refused = await pay(order_id, "42.00", uow=factory(), clock=FixedClock(), bus=bus)

        assert paid.payment is not None
        assert seen == [
            PaymentSucceeded.of(paid.payment),
            AttemptDecided(attempt(order_id, "42.00"), Outcome.PAID, paid.payment.id),
            AttemptDecided(attempt(order_id, "42.00"), refused.outcome),
        ]
        assert refused.outcome is Outcome.ORDER_NOT_PAYABLE


def told_of(event: OutboxEvent) -> tuple[str, int | None]:
    """An event as the type it was written with and the payment its data names."""
    data = json.loads(event.body)["data"]
    return event.type, data["payment_id"]


class RefundContract(UnitOfWorkContract):
    """The whole contract: every case of ``UnitOfWorkContract`` and the refunds' own
    (``RefundRepository``, ``RefundAuditTrail``, ``refund_ground_for``, the payment's guard)."""

    async def paid(self, total: str = "10.00") -> Payment:
        [order_id] = self.add_orders(total)
        return await self.pay_and_commit(order_id)

    async def refunds_of(self, payment_id: int) -> tuple[Payment | None, list[Refund]]:
        async with self.new_unit_of_work() as uow:
            payment = await uow.payments.get(payment_id)
            return payment, await uow.refunds.list_for_payment(payment_id)

    async def test_the_refund_ground_is_the_payment_with_its_refunds_and_an_id_set_aside(
        self,
    ) -> None:
        payment = await self.paid()
        assert payment.id is not None

        async with self.new_unit_of_work() as uow:
            ground = await uow.refund_ground_for(payment.id, caller=CALLER, key=None)
            missing = await uow.refund_ground_for(MAX_ID, caller=CALLER, key=None)

        assert ground.refundable is not None
        assert ground.refundable.payment == payment
        assert ground.refund_id is not None
        assert ground.kept is None
        assert (missing.refundable, missing.refund_id) == (None, None)

    async def test_a_refund_commits_with_the_payments_sum_its_audit_record_and_its_event(
        self,
    ) -> None:
        payment = await self.paid("10.00")
        assert payment.id is not None
        factory = self.unit_of_work_factory()

        first = await refund(payment.id, "2.50", uow=factory(), clock=FixedClock(), key=KEY)
        rest = await refund(payment.id, uow=factory(), clock=FixedClock())
        nothing_left = await refund(payment.id, "0.01", uow=factory(), clock=FixedClock())

        assert [first.outcome, rest.outcome, nothing_left.outcome] == [
            RefundOutcome.REFUNDED,
            RefundOutcome.REFUNDED,
            RefundOutcome.PAYMENT_NOT_REFUNDABLE,
        ]
        assert first.refund is not None
        assert rest.refund is not None
        stored, refunds = await self.refunds_of(payment.id)
        assert stored is not None
        assert stored.amount_refunded == Money.of("10.00")
        assert stored.refunded
        assert refunds == [first.refund, rest.refund]
        assert [r.amount for r in refunds] == [Money.of("2.50"), Money.of("7.50")]
        async with self.new_unit_of_work() as uow:
            assert await uow.refunds.get(first.refund.id or 0) == first.refund
            assert await uow.refunds.get(MAX_ID) is None
            trail = await uow.refund_audit.list_for_payment(payment.id)
        assert [(r.outcome, r.refund_id) for r in trail] == [
            (RefundOutcome.REFUNDED, first.refund.id),
            (RefundOutcome.REFUNDED, rest.refund.id),
            (RefundOutcome.PAYMENT_NOT_REFUNDABLE, None),
        ]
        assert trail[0].idempotency_key == KEY
        told = [json.loads(e.body)["data"] for e in await self.outbox()]
        assert [(d.get("refund_id"), d.get("amount_refunded")) for d in told] == [
            (None, None),
            (first.refund.id, "2.50"),
            (rest.refund.id, "10.00"),
        ]

    async def test_a_refund_whose_payment_was_refunded_meanwhile_writes_nothing(
        self,
    ) -> None:
        payment = await self.paid("10.00")
        assert payment.id is not None

        async with self.new_unit_of_work() as uow:
            ground = await uow.refund_ground_for(payment.id, caller=CALLER, key=None)
            other = await refund(
                payment.id, "1.00", uow=self.new_unit_of_work(), clock=FixedClock()
            )
            assert ground.refundable is not None
            assert ground.refund_id is not None
            made = ground.refundable.refund(
                Money.of("9.50"), reason=None, at=PAID_AT, refund_id=ground.refund_id
            )
            uow.payments.mark_refunded(ground.refundable)
            uow.refunds.add(made)
            with pytest.raises(PaymentChanged):
                await uow.commit()
            assert uow.collect_new_events() == []

        stored, refunds = await self.refunds_of(payment.id)
        assert stored is not None
        assert stored.amount_refunded == Money.of("1.00")
        assert refunds == [other.refund]
        assert len(await self.outbox()) == 2

    async def test_concurrent_refunds_never_add_up_to_more_than_the_payment(self) -> None:
        payment = await self.paid("10.00")
        assert payment.id is not None
        factory = self.unit_of_work_factory()

        outcomes = await asyncio.gather(
            *(
                refund(payment.id, "3.00", uow=factory(), clock=FixedClock(), request_id=f"r{n}")
                for n in range(8)
            ),
            return_exceptions=True,
        )

        stored, refunds = await self.refunds_of(payment.id)
        assert stored is not None
        refunded = sum((r.amount.amount for r in refunds), Decimal(0))
        assert refunded == stored.amount_refunded.amount
        assert refunded <= Decimal("10.00")
        made = [o for o in outcomes if not isinstance(o, BaseException) and o.refund]
        assert len(made) == len(refunds) <= 3
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                assert isinstance(outcome, RefundContention), outcome
