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

from payment.domain.attempts import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    AuditRecord,
    Decision,
    IdempotencyRecord,
    Outcome,
    RecordedAnswer,
)
from payment.domain.errors import IdempotencyKeyReused, OrderNotPayable
from payment.domain.model import Money, Order, OrderStatus, Payment, PaymentStatus
from payment.domain.policy import PaymentPolicy
from payment.domain.ports import UnitOfWork
from payment.domain.services import Reply
from tests.support.attempts import CALLER, REQUEST_ID, attempt, pay, plain_answer

PAID_AT = datetime(2026, 11, 26, 10, 15, 0, 123456, tzinfo=UTC)
POLICY = PaymentPolicy()

KEY = "8f14e45f-ceea-467f-a0e6-6b8c1c0a9f11"
RETENTION = timedelta(hours=24)
FINGERPRINT = attempt(1, "10.00", key=KEY).fingerprint
OTHER_FINGERPRINT = attempt(2, "10.00", key=KEY).fingerprint
ANSWER = RecordedAnswer(200, '{"outcome": "paid", "payment_id": 1}')
OTHER_ANSWER = RecordedAnswer(409, '{"outcome": "order_not_payable", "payment_id": null}')


class FixedClock:
    def __init__(self, moment: datetime = PAID_AT) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


def cents_text(cents: int) -> str:
    whole, fraction = divmod(cents, 100)
    return f"{whole}.{fraction:02d}"


class UnitOfWorkContract(abc.ABC):
    """The contract of ``OrderRepository``, ``PaymentRepository``, ``IdempotencyRepository``,
    ``AuditTrail`` and ``UnitOfWork``, and of the pay use case over them."""

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

    def test_get_finds_nothing_for_a_missing_order(self) -> None:
        [order_id] = self.add_orders("10.00")

        with self.new_unit_of_work() as uow:
            assert uow.orders.get(order_id + 1) is None

    @pytest.mark.parametrize("status", ["pending", "cancelled", "paid"])
    def test_get_returns_the_order_as_stored(self, status: str) -> None:
        [order_id, _] = self.add_orders("10.50", "20.00", status=status)

        with self.new_unit_of_work() as uow:
            order = uow.orders.get(order_id)

        assert order == Order(id=order_id, status=status, total=Money(Decimal("10.50")))
        assert order is not None
        assert type(order.total.amount) is Decimal

    def test_get_sees_a_committed_payment(self) -> None:
        [order_id] = self.add_orders("199.99")
        self.pay_and_commit(order_id)

        with self.new_unit_of_work() as uow:
            order = uow.orders.get(order_id)

        assert order == Order(
            id=order_id, status=OrderStatus.PAID, total=Money(Decimal("199.99")), paid_at=PAID_AT
        )
        assert order is not None
        assert order.paid_at is not None
        assert order.paid_at.tzinfo is UTC

    def test_get_sees_the_unit_of_works_own_change_and_nothing_after_a_rollback(self) -> None:
        [order_id] = self.add_orders("10.00")

        with self.new_unit_of_work() as uow:
            order = uow.orders.get_for_update(order_id)
            assert order is not None
            order.pay(order.total, at=PAID_AT, policy=POLICY)
            uow.orders.mark_paid(order)
            inside = uow.orders.get(order_id)

        with self.new_unit_of_work() as uow:
            after = uow.orders.get(order_id)
        assert inside is not None
        assert inside.status == OrderStatus.PAID
        assert after == Order(
            id=order_id, status=OrderStatus.PENDING, total=Money(Decimal("10.00"))
        )

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
        outcomes: list[Reply | BaseException] = []
        outcomes_lock = threading.Lock()

        def pay_once() -> None:
            start.wait(timeout=30)
            outcome: Reply | BaseException
            try:
                outcome = pay(order_id, "75.25", uow=factory(), clock=FixedClock())
            except BaseException as error:
                outcome = error
            with outcomes_lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=pay_once) for _ in range(attempts)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        paid = [o.payment for o in outcomes if isinstance(o, Reply) and o.outcome is Outcome.PAID]
        refused = [
            o for o in outcomes if isinstance(o, Reply) and o.outcome is Outcome.ORDER_NOT_PAYABLE
        ]
        assert len(paid) == 1, outcomes
        assert len(refused) == attempts - 1, outcomes
        with self.new_unit_of_work() as uow:
            assert uow.payments.list_for_order(order_id) == paid
            trail = uow.audit.list_for_order(order_id)
        assert sorted(record.outcome for record in trail) == sorted(
            [Outcome.PAID] + [Outcome.ORDER_NOT_PAYABLE] * (attempts - 1)
        )

    # IdempotencyRepository

    def claim(
        self,
        uow: UnitOfWork,
        key: str = KEY,
        *,
        caller: str = CALLER,
        fingerprint: str = FINGERPRINT,
    ) -> IdempotencyRecord | None:
        return uow.idempotency.claim(
            caller, key, fingerprint=fingerprint, at=PAID_AT, expires_at=PAID_AT + RETENTION
        )

    def claim_and_commit(
        self, answer: RecordedAnswer, key: str = KEY, *, caller: str = CALLER
    ) -> None:
        with self.new_unit_of_work() as uow:
            assert self.claim(uow, key, caller=caller) is None
            uow.idempotency.record_answer(caller, key, answer)
            uow.commit()

    def test_claiming_a_new_key_returns_none(self) -> None:
        with self.new_unit_of_work() as uow:
            assert self.claim(uow) is None

    def test_a_claim_committed_with_its_answer_is_returned_to_a_later_claim(self) -> None:
        self.claim_and_commit(ANSWER)

        with self.new_unit_of_work() as uow:
            earlier = self.claim(uow, fingerprint=OTHER_FINGERPRINT)

        assert earlier == IdempotencyRecord(FINGERPRINT, ANSWER)

    def test_a_claim_is_returned_the_same_to_every_later_claim(self) -> None:
        self.claim_and_commit(ANSWER)

        with self.new_unit_of_work() as uow:
            first = self.claim(uow)
            uow.commit()
        with self.new_unit_of_work() as uow:
            second = self.claim(uow, fingerprint=OTHER_FINGERPRINT)

        assert first == second == IdempotencyRecord(FINGERPRINT, ANSWER)

    def test_a_claim_in_a_unit_of_work_that_rolls_back_leaves_no_key(self) -> None:
        with self.new_unit_of_work() as uow:
            assert self.claim(uow) is None
            uow.idempotency.record_answer(CALLER, KEY, ANSWER)

        with self.new_unit_of_work() as uow:
            assert self.claim(uow, fingerprint=OTHER_FINGERPRINT) is None
            uow.idempotency.record_answer(CALLER, KEY, OTHER_ANSWER)
            uow.commit()
        with self.new_unit_of_work() as uow:
            assert self.claim(uow) == IdempotencyRecord(OTHER_FINGERPRINT, OTHER_ANSWER)

    def test_a_claim_in_a_unit_of_work_that_fails_leaves_no_key(self) -> None:
        def claim_then_fail() -> None:
            with self.new_unit_of_work() as uow:
                assert self.claim(uow) is None
                uow.idempotency.record_answer(CALLER, KEY, ANSWER)
                raise RuntimeError("after the claim")

        with pytest.raises(RuntimeError, match="after the claim"):
            claim_then_fail()

        with self.new_unit_of_work() as uow:
            assert self.claim(uow) is None

    def test_keys_are_scoped_by_caller(self) -> None:
        self.claim_and_commit(ANSWER, caller="shop-a")

        self.claim_and_commit(OTHER_ANSWER, caller="shop-b")

        with self.new_unit_of_work() as uow:
            assert self.claim(uow, caller="shop-a") == IdempotencyRecord(FINGERPRINT, ANSWER)
            assert self.claim(uow, caller="shop-b") == IdempotencyRecord(FINGERPRINT, OTHER_ANSWER)

    def test_different_keys_of_one_caller_are_claimed_separately(self) -> None:
        self.claim_and_commit(ANSWER, key="key-1")

        with self.new_unit_of_work() as uow:
            assert self.claim(uow, "key-2") is None

    def test_the_longest_key_and_a_large_answer_round_trip(self) -> None:
        key = "~" * MAX_IDEMPOTENCY_KEY_LENGTH
        answer = RecordedAnswer(422, '{"detail": "' + "é" * 10_000 + '"}')
        self.claim_and_commit(answer, key=key)

        with self.new_unit_of_work() as uow:
            assert self.claim(uow, key) == IdempotencyRecord(FINGERPRINT, answer)
            assert self.claim(uow, key[:-1]) is None

    # AuditTrail

    def test_the_audit_trail_lists_an_orders_records_in_insertion_order_with_every_field(
        self,
    ) -> None:
        [order_id, other_id] = self.add_orders("10.00", "20.00")
        payment = self.pay_and_commit(order_id)
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
            # Earlier than the ones before: the trail keeps the order of insertion, not of time.
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

        with self.new_unit_of_work() as uow:
            for record in [records[0], elsewhere, *records[1:]]:
                uow.audit.add(record)
            uow.commit()

        with self.new_unit_of_work() as uow:
            listed = uow.audit.list_for_order(order_id)
            listed_elsewhere = uow.audit.list_for_order(other_id)
            missing_order = uow.audit.list_for_order(other_id + 1)
        assert listed == records
        assert listed_elsewhere == [elsewhere]
        assert missing_order == []
        for record in listed:
            assert record.at.tzinfo is UTC
            assert type(record.claimed_amount.amount) is Decimal
            assert type(record.outcome) is Outcome
        assert listed[0].at == datetime(2026, 11, 26, 10, 15, 0, 1, tzinfo=UTC)
        assert listed[0].claimed_amount.amount.as_tuple() == Decimal("99999999.99").as_tuple()

    def test_audit_records_are_rolled_back_with_their_unit_of_work(self) -> None:
        [order_id] = self.add_orders("10.00")
        record = AuditRecord(
            at=PAID_AT,
            request_id=REQUEST_ID,
            caller=CALLER,
            order_id=order_id,
            claimed_amount=Money(Decimal("10.00")),
            outcome=Outcome.ORDER_NOT_PAYABLE,
        )

        with self.new_unit_of_work() as uow:
            uow.audit.add(record)
            assert uow.audit.list_for_order(order_id) == [record]

        with self.new_unit_of_work() as uow:
            assert uow.audit.list_for_order(order_id) == []

    # The pay use case with idempotency keys, on this adapter family

    def test_a_retry_with_the_same_key_is_replayed_and_pays_once(self) -> None:
        [order_id] = self.add_orders("42.00")
        factory = self.unit_of_work_factory()

        first = pay(order_id, "42.00", key=KEY, uow=factory(), clock=FixedClock())
        retry = pay(order_id, "42.00", key=KEY, uow=factory(), clock=FixedClock())

        assert first.outcome is Outcome.PAID
        assert first.payment is not None
        assert first.answer.status == 200
        assert retry.replayed
        assert retry.answer == first.answer
        assert retry.payment is None
        with self.new_unit_of_work() as uow:
            assert uow.payments.list_for_order(order_id) == [first.payment]
            trail = uow.audit.list_for_order(order_id)
        assert [(r.outcome, r.payment_id, r.idempotency_key) for r in trail] == [
            (Outcome.PAID, first.payment.id, KEY),
            (Outcome.REPLAYED, None, KEY),
        ]

    def test_a_refusal_is_kept_for_its_key_and_replayed(self) -> None:
        [order_id] = self.add_orders("42.00")
        factory = self.unit_of_work_factory()

        refused = pay(order_id, "41.99", key=KEY, uow=factory(), clock=FixedClock())
        retry = pay(order_id, "41.99", key=KEY, uow=factory(), clock=FixedClock())

        assert refused.outcome is Outcome.AMOUNT_MISMATCH
        assert refused.answer == plain_answer(Decision(Outcome.AMOUNT_MISMATCH))
        assert retry.replayed
        assert retry.answer == refused.answer
        order = self.read_order(order_id)
        assert order is not None
        assert order.status == OrderStatus.PENDING

    def test_the_same_key_with_another_request_is_refused_as_reused_and_pays_nothing(
        self,
    ) -> None:
        [order_id, other_id] = self.add_orders("42.00", "43.00")
        factory = self.unit_of_work_factory()
        refused = pay(order_id, "41.99", key=KEY, uow=factory(), clock=FixedClock())

        with pytest.raises(IdempotencyKeyReused):
            pay(other_id, "43.00", key=KEY, uow=factory(), clock=FixedClock())

        with self.new_unit_of_work() as uow:
            assert uow.payments.list_for_order(other_id) == []
            assert [r.outcome for r in uow.audit.list_for_order(other_id)] == [
                Outcome.IDEMPOTENCY_KEY_REUSED
            ]
            assert self.claim(uow, fingerprint=OTHER_FINGERPRINT) == IdempotencyRecord(
                attempt(order_id, "41.99", key=KEY).fingerprint, refused.answer
            )

    def test_the_same_key_from_another_caller_pays_its_own_order(self) -> None:
        [order_id, other_id] = self.add_orders("42.00", "43.00")
        factory = self.unit_of_work_factory()
        pay(order_id, "42.00", key=KEY, caller="shop-a", uow=factory(), clock=FixedClock())

        other = pay(other_id, "43.00", key=KEY, caller="shop-b", uow=factory(), clock=FixedClock())

        assert other.outcome is Outcome.PAID
        assert other.payment is not None
        assert other.payment.order_id == other_id
