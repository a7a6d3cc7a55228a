from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from functools import partial

import pytest

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain.model import Money, Order
from payment.domain.ports import UnitOfWork
from tests.contract.unit_of_work_contract import RefundContract


class TestInMemoryUnitOfWork(RefundContract):
    store: InMemoryStore

    @pytest.fixture(autouse=True)
    def empty_store(self) -> None:
        self.store = InMemoryStore()

    def unit_of_work_factory(self) -> Callable[[], UnitOfWork]:
        return partial(InMemoryUnitOfWork, self.store)

    def add_orders(self, *totals: str, status: str = "pending") -> list[int]:
        first = max(self.store.orders, default=0) + 1
        ids = list(range(first, first + len(totals)))
        for order_id, total in zip(ids, totals, strict=True):
            self.store.add_order(Order(id=order_id, status=status, total=Money(Decimal(total))))
        return ids

    def change_order(
        self,
        order_id: int,
        *,
        status: str,
        total: str | None = None,
        paid_at: datetime | None = None,
    ) -> None:
        with self.store.lock:
            stored = self.store.orders[order_id]
            self.store.orders[order_id] = replace(
                stored,
                status=status,
                total=stored.total if total is None else Money(Decimal(total)),
                paid_at=paid_at,
            )
