"""A store in a dict, with the same guarantees as the database: all or nothing, one
succeeded payment per order, one unit of work at a time."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Self

from payment.domain.attempts import AuditRecord, IdempotencyRecord, RecordedAnswer
from payment.domain.errors import OrderNotPayable
from payment.domain.model import Order, OrderStatus, Payment, PaymentStatus


@dataclass(frozen=True, slots=True)
class KeptKey:
    fingerprint: str
    expires_at: datetime
    answer: RecordedAnswer | None = None


@dataclass
class InMemoryStore:
    """The committed state. Shared by every unit of work made on it."""

    orders: dict[int, Order] = field(default_factory=dict)
    payments: dict[int, Payment] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], KeptKey] = field(default_factory=dict)
    audit: list[AuditRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_order(self, order: Order) -> None:
        with self.lock:
            self.orders[order.id] = replace(order)


class InMemoryOrderRepository:
    def __init__(self, orders: dict[int, Order]) -> None:
        self._orders = orders

    def get(self, order_id: int) -> Order | None:
        return self.get_for_update(order_id)

    def get_for_update(self, order_id: int) -> Order | None:
        order = self._orders.get(order_id)
        return None if order is None else replace(order)

    def mark_paid(self, order: Order) -> None:
        stored = self._orders.get(order.id)
        if stored is None or stored.status != OrderStatus.PENDING:
            raise OrderNotPayable(order.id, stored.status if stored else "missing")
        self._orders[order.id] = replace(order)


class InMemoryPaymentRepository:
    def __init__(self, payments: dict[int, Payment]) -> None:
        self._payments = payments

    def add(self, payment: Payment) -> Payment:
        if any(
            p.order_id == payment.order_id and p.status == PaymentStatus.SUCCEEDED
            for p in self._payments.values()
        ):
            raise OrderNotPayable(payment.order_id, OrderStatus.PAID)
        payment_id = max(self._payments, default=0) + 1
        self._payments[payment_id] = replace(payment, id=payment_id)
        return self._payments[payment_id]

    def get(self, payment_id: int) -> Payment | None:
        return self._payments.get(payment_id)

    def list_for_order(self, order_id: int) -> list[Payment]:
        found = [p for p in self._payments.values() if p.order_id == order_id]
        return sorted(found, key=lambda p: (p.created_at, p.id or 0))


class InMemoryIdempotencyRepository:
    """Units of work on one store run one at a time, so a claim never finds one in use."""

    def __init__(self, keys: dict[tuple[str, str], KeptKey]) -> None:
        self._keys = keys

    def claim(
        self, caller: str, key: str, *, fingerprint: str, at: datetime, expires_at: datetime
    ) -> IdempotencyRecord | None:
        kept = self._keys.get((caller, key))
        if kept is None:
            self._keys[(caller, key)] = KeptKey(fingerprint, expires_at)
            return None
        if kept.answer is None:
            raise ValueError(f"key {key!r} was kept without its answer")
        return IdempotencyRecord(kept.fingerprint, kept.answer)

    def record_answer(self, caller: str, key: str, answer: RecordedAnswer) -> None:
        self._keys[(caller, key)] = replace(self._keys[(caller, key)], answer=answer)


class InMemoryAuditTrail:
    def __init__(self, records: list[AuditRecord]) -> None:
        self._records = records

    def add(self, record: AuditRecord) -> None:
        self._records.append(record)

    def list_for_order(self, order_id: int) -> list[AuditRecord]:
        return [record for record in self._records if record.order_id == order_id]


class InMemoryUnitOfWork:
    """Works on a copy of the store under the store's lock; ``commit`` puts the copy back.

    ``committed`` tells a test whether the use case committed.
    """

    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self.committed = False

    def __enter__(self) -> Self:
        self._store.lock.acquire()
        self._orders = dict(self._store.orders)
        self._payments = dict(self._store.payments)
        self._keys = dict(self._store.idempotency)
        self._audit = list(self._store.audit)
        self.orders = InMemoryOrderRepository(self._orders)
        self.payments = InMemoryPaymentRepository(self._payments)
        self.idempotency = InMemoryIdempotencyRepository(self._keys)
        self.audit = InMemoryAuditTrail(self._audit)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._store.lock.release()

    def commit(self) -> None:
        self._store.orders = self._orders
        self._store.payments = self._payments
        self._store.idempotency = self._keys
        self._store.audit = self._audit
        self.committed = True
