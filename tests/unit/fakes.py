"""Fakes for the unit tests: a clock that stands still and order-building helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from payment.adapters.in_memory import InMemoryStore
from payment.domain.model import Money, Order, OrderStatus

NOW = datetime(2026, 11, 26, 10, 15, 0, 123456, tzinfo=UTC)


class FixedClock:
    """A clock that always answers the same aware UTC time."""

    def __init__(self, moment: datetime = NOW) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


def pending_order(order_id: int = 1, total: str = "199.99") -> Order:
    return Order(id=order_id, status=OrderStatus.PENDING, total=Money(Decimal(total)))


def store_with(*orders: Order) -> InMemoryStore:
    store = InMemoryStore()
    for order in orders:
        store.add_order(order)
    return store
