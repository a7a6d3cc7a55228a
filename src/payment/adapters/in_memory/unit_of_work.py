"""A store in a dict, with the same guarantees as the database: staged writes that commit all
or nothing, under the same conditions; one succeeded payment per order."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Self

from payment.adapters import cloudevents
from payment.domain.attempts import AuditRecord, IdempotencyRecord
from payment.domain.delivery import OutboxEvent
from payment.domain.errors import (
    IdempotencyKeyTaken,
    OrderChanged,
    OrderNotPayable,
    PaymentChanged,
)
from payment.domain.events import Event, PaymentSucceeded, RefundSucceeded
from payment.domain.model import Order, OrderStatus, Payment, PaymentStatus
from payment.domain.ports import AttemptGround
from payment.domain.refunds import Refund, Refundable, RefundAuditRecord, RefundGround


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
    outbox: list[OutboxEvent] = field(default_factory=list)
    refunds: dict[int, Refund] = field(default_factory=dict)
    refund_audit: list[RefundAuditRecord] = field(default_factory=list)
    refund_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    """The published events, in the order they committed."""
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
        self.staged.append(order)


class InMemoryPaymentRepository:
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self.staged: list[Payment] = []
        self.refunded: list[Refundable] = []

    async def next_id(self) -> int:
        return next(self._store.payment_ids)

    def add(self, payment: Payment) -> None:
        if payment.id is None:
            raise ValueError("a payment is added with the id set aside for it")
        self.staged.append(payment)

    def mark_refunded(self, refundable: Refundable) -> None:
        self.refunded.append(refundable)

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


class InMemoryRefundRepository:
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self.staged: list[Refund] = []

    def add(self, refund: Refund) -> None:
        if refund.id is None:
            raise ValueError("a refund is added with the id set aside for it")
        self.staged.append(refund)

    async def get(self, refund_id: int) -> Refund | None:
        return self._store.refunds.get(refund_id)

    async def list_for_payment(self, payment_id: int) -> list[Refund]:
        found = [r for r in self._store.refunds.values() if r.payment_id == payment_id]
        return sorted(found, key=lambda r: (r.created_at, r.id or 0))


class InMemoryRefundAuditTrail:
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self.staged: list[RefundAuditRecord] = []

    def add(self, record: RefundAuditRecord) -> None:
        self.staged.append(record)

    async def list_for_payment(self, payment_id: int) -> list[RefundAuditRecord]:
        return [r for r in self._store.refund_audit if r.payment_id == payment_id]


class InMemoryEventLog:
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store

    async def get(self, event_id: str) -> OutboxEvent | None:
        return next((e for e in self._store.outbox if e.event_id == event_id), None)

    async def after(self, position: int, *, limit: int) -> list[OutboxEvent]:
        return [e for e in self._store.outbox if e.position > position][:limit]


def _outbox_event(event: Event, *, position: int, source: str) -> OutboxEvent:
    if not isinstance(event, PaymentSucceeded | RefundSucceeded):
        raise TypeError(f"{type(event).__name__} is not told to the shop")
    event_id = cloudevents.new_event_id()
    return OutboxEvent(
        position=position,
        event_id=event_id,
        type=event.type,
        subject=str(event.order_id),
        body=cloudevents.structured(event, event_id=event_id, source=source),
        created_at=event.created_at,
    )


class InMemoryUnitOfWork:
    """Reads the committed store; ``commit`` checks the staged writes' conditions and applies
    them under the store's lock, all or none.

    ``committed`` tells a test whether the use case committed.
    """

    def __init__(
        self, store: InMemoryStore, *, event_source: str = cloudevents.DEFAULT_SOURCE
    ) -> None:
        self._store = store
        self._event_source = event_source
        self._committed_events: list[Event] = []
        self.events = InMemoryEventLog(store)
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
        self.refunds = InMemoryRefundRepository(self._store)
        self.refund_audit = InMemoryRefundAuditTrail(self._store)

    def collect_new_events(self) -> list[Event]:
        events, self._committed_events = self._committed_events, []
        return events

    async def ground_for(self, order_id: int, *, caller: str, key: str | None) -> AttemptGround:
        order = await self.orders.get(order_id)
        kept = None if key is None else self._store.idempotency.get((caller, key))
        payable = order is not None and order.status == OrderStatus.PENDING and kept is None
        return AttemptGround(
            order=order,
            kept=None if kept is None else kept.record,
            payment_id=await self.payments.next_id() if payable else None,
        )

    async def refund_ground_for(
        self, payment_id: int, *, caller: str, key: str | None
    ) -> RefundGround:
        payment = self._store.payments.get(payment_id)
        kept = None if key is None else self._store.idempotency.get((caller, key))
        refundable = payment is not None and payment.refundable.is_positive and kept is None
        return RefundGround(
            refundable=None if payment is None else Refundable(payment),
            kept=None if kept is None else kept.record,
            refund_id=next(self._store.refund_ids) if refundable else None,
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
                for refundable in self.payments.refunded:
                    stored_payment = store.payments.get(refundable.payment_id)
                    if (
                        stored_payment is None
                        or stored_payment.amount_refunded != refundable.refunded_when_read
                    ):
                        raise PaymentChanged
                if any(name in store.idempotency for name, _ in self.idempotency.staged):
                    raise IdempotencyKeyTaken
                for order in self.orders.staged:
                    store.orders[order.id] = replace(order)
                for payment in self.payments.staged:
                    store.payments[payment.id or 0] = payment
                for refundable in self.payments.refunded:
                    store.payments[refundable.payment_id] = refundable.payment
                for refund in self.refunds.staged:
                    store.refunds[refund.id or 0] = refund
                store.idempotency.update(self.idempotency.staged)
                store.audit.extend(self.audit.staged)
                store.refund_audit.extend(self.refund_audit.staged)
                changed: list[Order | Refundable] = [*self.orders.staged, *self.payments.refunded]
                for aggregate in changed:
                    for event in aggregate.events:
                        if event.published:
                            position = len(store.outbox) + 1
                            store.outbox.append(
                                _outbox_event(event, position=position, source=self._event_source)
                            )
                    self._committed_events += aggregate.events
                    aggregate.events = []
                self.committed = True
        finally:
            self._stage_afresh()
