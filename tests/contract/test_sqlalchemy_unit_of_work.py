from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from functools import partial

import pytest
from sqlalchemy import Engine

from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from payment.domain.model import Money, Order, OrderStatus
from payment.domain.ports import UnitOfWork
from tests.contract.unit_of_work_contract import PAID_AT, POLICY, UnitOfWorkContract
from tests.support.orders import add_orders

LOCK_WAIT_SECONDS = 5
"""Far longer than an unlocked statement takes; only a lock wait can run past it."""


class TestSqlAlchemyUnitOfWork(UnitOfWorkContract):
    engine: Engine

    @pytest.fixture(autouse=True)
    def empty_database(self, clean_database: Engine) -> None:
        self.engine = clean_database

    def unit_of_work_factory(self) -> Callable[[], UnitOfWork]:
        return partial(SqlAlchemyUnitOfWork, self.engine)

    def add_orders(self, *totals: str, status: str = "pending") -> list[int]:
        return add_orders(self.engine, *totals, status=status)

    # Only a database has concurrent units of work: the in-memory store runs them one at a time.

    def test_get_takes_no_lock_so_a_payment_can_lock_the_order_meanwhile(self) -> None:
        [order_id] = self.add_orders("10.00")
        locked = threading.Event()

        def lock_the_order() -> None:
            with self.new_unit_of_work() as payer:
                payer.orders.get_for_update(order_id)
                locked.set()

        with self.new_unit_of_work() as reader:
            assert reader.orders.get(order_id) is not None
            payer = threading.Thread(target=lock_the_order, daemon=True)
            payer.start()
            got_the_lock = locked.wait(LOCK_WAIT_SECONDS)
        payer.join(timeout=30)

        assert got_the_lock

    def test_get_reads_the_committed_order_without_waiting_for_a_payment_in_progress(
        self,
    ) -> None:
        [order_id] = self.add_orders("10.00")
        read: list[Order | None] = []
        done = threading.Event()

        def read_the_order() -> None:
            with self.new_unit_of_work() as reader:
                read.append(reader.orders.get(order_id))
            done.set()

        with self.new_unit_of_work() as payer:
            order = payer.orders.get_for_update(order_id)
            assert order is not None
            order.pay(order.total, at=PAID_AT, policy=POLICY)
            payer.orders.mark_paid(order)
            reader = threading.Thread(target=read_the_order, daemon=True)
            reader.start()
            answered_meanwhile = done.wait(LOCK_WAIT_SECONDS)
        reader.join(timeout=30)

        assert answered_meanwhile
        assert read == [Order(id=order_id, status=OrderStatus.PENDING, total=Money(Decimal("10")))]
