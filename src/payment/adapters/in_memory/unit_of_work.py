"""A store in a dict, with the same guarantees as the database: staged writes that commit all
or nothing, under the same conditions; one succeeded payment per order."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Self

from payment.domain.attempts import AuditRecord, IdempotencyRecord
from payment.domain.errors import IdempotencyKeyTaken, OrderChanged, OrderNotPayable
from payment.domain.model import Order, OrderStatus, Payment, PaymentStatus
from payment.domain.ports import AttemptGround


@dataclass(frozen=True, slots=True)
class KeptKey:
    record: IdempotencyRecord
    expires_at: datetime


@dataclass
class InMemoryStore:
    """The committed state. Shared by every unit of work made on it."""

    orders: dict[int, Order] = field(default_factory=dict)
    payments: dict[int, Payment] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], KeptKey] = field(default_factory=dict)
    audit: list[AuditRecord] = field(default_factory=list)
    payment_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    """Held only while a commit checks its conditions and applies its writes."""

    def add_order(self, order: Order) -> None:
        with self.lock:
            self.orders[order.id] = replace(order)


class InMemoryOrderRepository:
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self.staged: list[Order] = []

    async def get(self, order_id: int) -> Order | None:
        order = self._store.orders.get(order_id)
        return None if order is None else replace(order)

    def mark_paid(self, order: Order) -> None:
        self.staged.append(replace(order))


class InMemoryPaymentRepository:
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self.staged: list[Payment] = []

    async def next_id(self) -> int:
        return next(self._store.payment_ids)

    def add(self, payment: Payment) -> None:
        if payment.id is None:
            raise ValueError("a payment is added with the id set aside for it")
        self.staged.append(payment)

    async def get(self, payment_id: int) -> Payment | None:
        return self._store.payments.get(payment_id)

    async def list_for_order(self, order_id: int) -> list[Payment]:
        found = [p for p in self._store.payments.values() if p.order_id == order_id]
        return sorted(found, key=lambda p: (p.created_at, p.id or 0))


class InMemoryIdempotencyRepository:
    def __init__(self) -> None:
        self.staged: list[tuple[tuple[str, str], KeptKey]] = []

    def add(
        self,
        caller: str,
        key: str,
        record: IdempotencyRecord,
        *,
        at: datetime,
        expires_at: datetime,
    ) -> None:
        self.staged.append(((caller, key), KeptKey(record, expires_at)))


class InMemoryAuditTrail:
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self.staged: list[AuditRecord] = []

    def add(self, record: AuditRecord) -> None:
        self.staged.append(record)

    async def list_for_order(self, order_id: int) -> list[AuditRecord]:
        return [record for record in self._store.audit if record.order_id == order_id]


class InMemoryUnitOfWork:
    """Reads the committed store; ``commit`` checks the staged writes' conditions and applies
    them under the store's lock, all or none.

    ``committed`` tells a test whether the use case committed.
    """

    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self.committed = False

    async def __aenter__(self) -> Self:
        self._stage_afresh()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stage_afresh()

    def _stage_afresh(self) -> None:
        self.orders = InMemoryOrderRepository(self._store)
        self.payments = InMemoryPaymentRepository(self._store)
        self.idempotency = InMemoryIdempotencyRepository()
        self.audit = InMemoryAuditTrail(self._store)

    async def ground_for(self, order_id: int, *, caller: str, key: str | None) -> AttemptGround:
        order = await self.orders.get(order_id)
        kept = None if key is None else self._store.idempotency.get((caller, key))
        payable = order is not None and order.status == OrderStatus.PENDING and kept is None
        return AttemptGround(
            order=order,
            kept=None if kept is None else kept.record,
            payment_id=await self.payments.next_id() if payable else None,
        )

    async def commit(self) -> None:
        store = self._store
        try:
            with store.lock:
                for order in self.orders.staged:
                    stored = store.orders.get(order.id)
                    if (
                        stored is None
                        or stored.status != OrderStatus.PENDING
                        or stored.total != order.total
                    ):
                        raise OrderChanged
                succeeded = [
                    p.order_id
                    for p in (*store.payments.values(), *self.payments.staged)
                    if p.status == PaymentStatus.SUCCEEDED
                ]
                for payment in self.payments.staged:
                    if succeeded.count(payment.order_id) > 1:
                        raise OrderNotPayable(payment.order_id, OrderStatus.PAID)
                if any(name in store.idempotency for name, _ in self.idempotency.staged):
                    raise IdempotencyKeyTaken
                for order in self.orders.staged:
                    store.orders[order.id] = replace(order)
                for payment in self.payments.staged:
                    store.payments[payment.id or 0] = payment
                store.idempotency.update(self.idempotency.staged)
                store.audit.extend(self.audit.staged)
                self.committed = True
        finally:
            self._stage_afresh()
