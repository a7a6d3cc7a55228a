"""What every adapter family must do for the domain's repositories and unit of work.

One abstract set of tests; each adapter family runs it by subclassing ``UnitOfWorkContract``
and saying how to make a unit of work and how to seed orders.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payment.domain import services
from payment.domain.errors import OrderNotPayable, PaymentError
from payment.domain.model import Money, Order, OrderStatus, Payment, PaymentStatus
from payment.domain.policy import PaymentPolicy
from payment.domain.ports import UnitOfWork

PAID_AT = datetime(2026, 11, 26, 10, 15, 0, 123456, tzinfo=UTC)
POLICY = PaymentPolicy()


class FixedClock:
    def __init__(self, moment: datetime = PAID_AT) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


def cents_text(cents: int) -> str:
    whole, fraction = divmod(cents, 100)
    return f"{whole}.{fraction:02d}"


class UnitOfWorkContract(abc.ABC):
    """The contract of ``OrderRepository``, ``PaymentRepository`` and ``UnitOfWork``."""

    @abc.abstractmethod
    def unit_of_work_factory(self) -> Callable[[], UnitOfWork]:
        """Makes a new unit of work on this test's own, initially empty, store."""

    @abc.abstractmethod
    def add_orders(self, *totals: str, status: str = "pending") -> list[int]:
        """Store one committed order per total, as the order service would; their ids."""

    def new_unit_of_work(self) -> UnitOfWork:
        return self.unit_of_work_factory()()

    def read_order(self, order_id: int) -> Order | None:
        with self.new_unit_of_work() as uow:
            return uow.orders.get_for_update(order_id)

    def pay_and_commit(self, order_id: int, at: datetime = PAID_AT) -> Payment:
        with self.new_unit_of_work() as uow:
            order = uow.orders.get_for_update(order_id)
            assert order is not None
            payment = order.pay(order.total, at=at, policy=POLICY)
            uow.orders.mark_paid(order)
            stored = uow.payments.add(payment)
            uow.commit()
        return stored

    def test_get_for_update_finds_nothing_for_a_missing_order(self) -> None:
        self.add_orders("10.00")

        with self.new_unit_of_work() as uow:
            assert uow.orders.get_for_update(2) is None

    def test_get_for_update_returns_the_order_with_its_total_as_money(self) -> None:
        [order_id] = self.add_orders("10.50")

        order = self.read_order(order_id)

        assert order == Order(
            id=order_id, status=OrderStatus.PENDING, total=Money(Decimal("10.50")), paid_at=None
        )

    @pytest.mark.parametrize("status", ["cancelled", "refunded", "paid"])
    def test_get_for_update_returns_any_status_as_stored(self, status: str) -> None:
        [order_id] = self.add_orders("10.00", status=status)

        order = self.read_order(order_id)

        assert order is not None
        assert order.status == status

    def test_a_committed_payment_and_the_paid_order_are_seen_by_a_new_unit_of_work(self) -> None:
        [order_id, other_id] = self.add_orders("199.99", "5.00")

        payment = self.pay_and_commit(order_id)

        assert payment.id is not None
        assert self.read_order(order_id) == Order(
            id=order_id, status=OrderStatus.PAID, total=Money(Decimal("199.99")), paid_at=PAID_AT
        )
        with self.new_unit_of_work() as uow:
            assert uow.payments.get(payment.id) == payment
            assert uow.payments.list_for_order(order_id) == [payment]
            assert uow.payments.list_for_order(other_id) == []
        other = self.read_order(other_id)
        assert other is not None
        assert other.status == OrderStatus.PENDING

    def test_the_stored_payment_is_the_one_that_was_added(self) -> None:
        [order_id] = self.add_orders("42.00")

        payment = self.pay_and_commit(order_id)

        assert payment == Payment(
            order_id=order_id,
            amount=Money(Decimal("42.00")),
            created_at=PAID_AT,
            status=PaymentStatus.SUCCEEDED,
            id=payment.id,
        )

    def test_leaving_without_commit_rolls_everything_back(self) -> None:
        [order_id] = self.add_orders("10.00")

        with self.new_unit_of_work() as uow:
            order = uow.orders.get_for_update(order_id)
            assert order is not None
            payment = order.pay(order.total, at=PAID_AT, policy=POLICY)
            uow.orders.mark_paid(order)
            added = uow.payments.add(payment)

        assert added.id is not None
        assert self.read_order(order_id) == Order(
            id=order_id, status=OrderStatus.PENDING, total=Money(Decimal("10.00"))
        )
        with self.new_unit_of_work() as uow:
            assert uow.payments.get(added.id) is None
            assert uow.payments.list_for_order(order_id) == []

    def test_an_error_inside_the_unit_of_work_rolls_everything_back(self) -> None:
        [order_id] = self.add_orders("10.00")

        def write_then_fail() -> None:
            with self.new_unit_of_work() as uow:
                order = uow.orders.get_for_update(order_id)
                assert order is not None
                uow.orders.mark_paid(replace(order, status=OrderStatus.PAID, paid_at=PAID_AT))
                uow.payments.add(Payment(order_id=order_id, amount=order.total, created_at=PAID_AT))
                raise RuntimeError("after the writes")

        with pytest.raises(RuntimeError, match="after the writes"):
            write_then_fail()

        order_after = self.read_order(order_id)
        assert order_after is not None
        assert order_after.status == OrderStatus.PENDING
        assert order_after.paid_at is None
        with self.new_unit_of_work() as uow:
            assert uow.payments.list_for_order(order_id) == []

    def test_what_was_committed_stays_when_an_error_follows(self) -> None:
        [order_id] = self.add_orders("10.00")

        def commit_then_fail() -> None:
            with self.new_unit_of_work() as uow:
                order = uow.orders.get_for_update(order_id)
                assert order is not None
                payment = order.pay(order.total, at=PAID_AT, policy=POLICY)
                uow.orders.mark_paid(order)
                uow.payments.add(payment)
                uow.commit()
                raise RuntimeError("after the commit")

        with pytest.raises(RuntimeError, match="after the commit"):
            commit_then_fail()

        order_after = self.read_order(order_id)
        assert order_after is not None
        assert order_after.status == OrderStatus.PAID
        with self.new_unit_of_work() as uow:
            assert len(uow.payments.list_for_order(order_id)) == 1

    def test_a_second_succeeded_payment_for_an_order_is_refused(self) -> None:
        [order_id] = self.add_orders("10.00")
        payment = Payment(order_id=order_id, amount=Money(Decimal("10.00")), created_at=PAID_AT)

        with self.new_unit_of_work() as uow:
            uow.payments.add(payment)
            with pytest.raises(OrderNotPayable) as refused:
                uow.payments.add(payment)

        assert refused.value.order_id == order_id
        assert refused.value.status == OrderStatus.PAID

    def test_a_payment_is_refused_for_an_order_paid_in_an_earlier_unit_of_work(self) -> None:
        [order_id] = self.add_orders("10.00")
        first = self.pay_and_commit(order_id)

        with self.new_unit_of_work() as uow, pytest.raises(OrderNotPayable) as refused:
            uow.payments.add(
                Payment(order_id=order_id, amount=Money(Decimal("10.00")), created_at=PAID_AT)
            )

        assert refused.value.status == OrderStatus.PAID
        with self.new_unit_of_work() as uow:
            assert uow.payments.list_for_order(order_id) == [first]

    def test_mark_paid_refuses_an_order_already_paid(self) -> None:
        [order_id] = self.add_orders("10.00")
        self.pay_and_commit(order_id)
        stale = Order(
            id=order_id, status=OrderStatus.PAID, total=Money(Decimal("10.00")), paid_at=PAID_AT
        )

        with self.new_unit_of_work() as uow, pytest.raises(OrderNotPayable) as refused:
            uow.orders.mark_paid(replace(stale, paid_at=PAID_AT + timedelta(hours=1)))

        assert refused.value.order_id == order_id
        assert refused.value.status == OrderStatus.PAID
        assert self.read_order(order_id) == stale

    def test_mark_paid_refuses_an_order_that_is_not_pending(self) -> None:
        [order_id] = self.add_orders("10.00", status="cancelled")
        paid = Order(
            id=order_id, status=OrderStatus.PAID, total=Money(Decimal("10.00")), paid_at=PAID_AT
        )

        with self.new_unit_of_work() as uow, pytest.raises(OrderNotPayable):
            uow.orders.mark_paid(paid)

        order = self.read_order(order_id)
        assert order is not None
        assert order.status == "cancelled"
        assert order.paid_at is None

    def test_payments_get_finds_nothing_for_a_missing_id(self) -> None:
        [order_id] = self.add_orders("10.00")
        payment = self.pay_and_commit(order_id)
        assert payment.id is not None

        with self.new_unit_of_work() as uow:
            assert uow.payments.get(payment.id + 1) is None

    def test_each_payment_gets_its_own_id(self) -> None:
        order_ids = self.add_orders("1.00", "2.00", "3.00")

        payments = [self.pay_and_commit(order_id) for order_id in order_ids]

        ids = [payment.id for payment in payments]
        assert None not in ids
        assert len(set(ids)) == len(ids)
        with self.new_unit_of_work() as uow:
            for payment in payments:
                assert payment.id is not None
                assert uow.payments.get(payment.id) == payment

    def test_list_for_order_gives_only_that_orders_payments(self) -> None:
        order_ids = self.add_orders("1.00", "2.00", "3.00")
        moments = [PAID_AT + timedelta(minutes=m) for m in (5, 0, 10)]
        payments = {
            order_id: self.pay_and_commit(order_id, at=moment)
            for order_id, moment in zip(order_ids, moments, strict=True)
        }

        with self.new_unit_of_work() as uow:
            listed = {order_id: uow.payments.list_for_order(order_id) for order_id in order_ids}

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
    def test_times_come_back_aware_utc_and_equal_to_the_microsecond(self, moment: datetime) -> None:
        [order_id] = self.add_orders("10.00")

        payment = self.pay_and_commit(order_id, at=moment)

        assert payment.id is not None
        with self.new_unit_of_work() as uow:
            stored = uow.payments.get(payment.id)
            order = uow.orders.get_for_update(order_id)
        assert stored is not None
        assert order is not None
        assert order.paid_at is not None
        for came_back in (stored.created_at, order.paid_at):
            assert came_back == moment
            assert came_back.tzinfo is UTC
            assert came_back.microsecond == moment.microsecond

    @pytest.mark.parametrize("total", ["0.01", "0.10", "1", "12345.6", "99999999.99"])
    def test_amounts_come_back_as_exact_decimals_of_scale_two(self, total: str) -> None:
        [order_id] = self.add_orders(total)

        payment = self.pay_and_commit(order_id)

        assert payment.id is not None
        with self.new_unit_of_work() as uow:
            stored = uow.payments.get(payment.id)
            order = uow.orders.get_for_update(order_id)
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
    def test_every_amount_in_range_round_trips_exactly(self, cents: int) -> None:
        total = cents_text(cents)
        [order_id] = self.add_orders(total)

        payment = self.pay_and_commit(order_id)

        assert payment.id is not None
        with self.new_unit_of_work() as uow:
            stored = uow.payments.get(payment.id)
        assert stored is not None
        assert stored.amount.amount.as_tuple() == Decimal(total).as_tuple()

    def test_concurrent_payments_of_one_order_make_exactly_one_payment(self) -> None:
        [order_id] = self.add_orders("75.25")
        factory = self.unit_of_work_factory()
        attempts = 8
        start = threading.Barrier(attempts)
        outcomes: list[Payment | PaymentError | BaseException] = []
        outcomes_lock = threading.Lock()

        def attempt() -> None:
            start.wait()
            outcome: Payment | BaseException
            try:
                outcome = services.pay(
                    order_id, Money(Decimal("75.25")), uow=factory(), clock=FixedClock()
                )
            except BaseException as error:
                outcome = error
            with outcomes_lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=attempt) for _ in range(attempts)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        paid = [outcome for outcome in outcomes if isinstance(outcome, Payment)]
        refused = [outcome for outcome in outcomes if isinstance(outcome, OrderNotPayable)]
        assert len(paid) == 1
        assert len(refused) == attempts - 1, outcomes
        with self.new_unit_of_work() as uow:
            assert uow.payments.list_for_order(order_id) == paid
