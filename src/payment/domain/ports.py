"""What the domain needs from the outside world, stated as protocols it owns.

Reads go to the store as they are asked for. Writes are staged on the repositories and reach
the store together, in one atomic step, when the unit of work commits: a commit is one round
trip, and its conditions make it safe without holding a lock between the read and the write
(optimistic concurrency: when what a decision was based on changed meanwhile, the commit
writes nothing and raises ``ConcurrentChange``, and the decision is made again).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from payment.domain.attempts import AuditRecord, IdempotencyRecord
from payment.domain.delivery import OutboxEvent
from payment.domain.events import Event
from payment.domain.model import Order, Payment
from payment.domain.refunds import Refund, Refundable, RefundAuditRecord, RefundGround


@dataclass(frozen=True, slots=True)
class AttemptGround:
    """What deciding a payment attempt needs, read in one step."""

    order: Order | None
    """The order as committed now, or None when there is no such order."""
    kept: IdempotencyRecord | None = None
    """The first request and answer of the attempt's idempotency key, when it has been used."""
    payment_id: int | None = None
    """An id set aside for the payment when the order looked payable (pending, key unused);
    unused ids are skipped, as a sequence's are."""


class OrderRepository(Protocol):
    async def get(self, order_id: int) -> Order | None:
        """The order as committed now; None if there is no such order."""
        ...

    def mark_paid(self, order: Order) -> None:
        """Stage the order's change to paid at ``order.paid_at``. The commit makes it only if
        the stored order is still pending with the same total; else it raises
        ``OrderChanged`` and writes nothing."""
        ...


class PaymentRepository(Protocol):
    async def next_id(self) -> int:
        """A new payment id, set aside for a payment about to be added."""
        ...

    def add(self, payment: Payment) -> None:
        """Stage a new payment, with its id. The commit raises ``OrderNotPayable`` if the
        order already has a succeeded payment."""
        ...

    def mark_refunded(self, refundable: Refundable) -> None:
        """Stage the payment's new refunded sum (``refundable.payment.amount_refunded``). The
        commit makes it only if the stored sum is still ``refundable.refunded_when_read``;
        else it raises ``PaymentChanged`` and writes nothing. The store also refuses a sum
        above the payment's amount."""
        ...

    async def get(self, payment_id: int) -> Payment | None:
        """The payment with this id, or None."""
        ...

    async def list_for_order(self, order_id: int) -> list[Payment]:
        """The order's payments, oldest first."""
        ...


class IdempotencyRepository(Protocol):
    def add(
        self,
        caller: str,
        key: str,
        record: IdempotencyRecord,
        *,
        at: datetime,
        expires_at: datetime,
    ) -> None:
        """Stage the caller's key with its first request and answer, kept at least until
        ``expires_at``. The commit raises
        ``IdempotencyKeyTaken`` and writes nothing if the key was stored meanwhile."""
        ...


class AuditTrail(Protocol):
    def add(self, record: AuditRecord) -> None:
        """Stage a record; it commits with the rest of the unit of work, or not at all."""
        ...

    async def list_for_order(self, order_id: int) -> list[AuditRecord]:
        """The records about one order, oldest first."""
        ...


class RefundRepository(Protocol):
    def add(self, refund: Refund) -> None:
        """Stage a new refund, with the id set aside for it."""
        ...

    async def get(self, refund_id: int) -> Refund | None:
        """The refund with this id, or None."""
        ...

    async def list_for_payment(self, payment_id: int) -> list[Refund]:
        """The payment's refunds, oldest first."""
        ...


class RefundAuditTrail(Protocol):
    def add(self, record: RefundAuditRecord) -> None:
        """Stage a record; it commits with the rest of the unit of work, or not at all."""
        ...

    async def list_for_payment(self, payment_id: int) -> list[RefundAuditRecord]:
        """The records about one payment's refunds, oldest first."""
        ...


class EventLog(Protocol):
    """The events told to the shop, as the outbox keeps them: for consumers catching up."""

    async def get(self, event_id: str) -> OutboxEvent | None:
        """The event with this id, or None."""
        ...

    async def after(self, position: int, *, limit: int) -> list[OutboxEvent]:
        """Up to ``limit`` events written after ``position``, in the order they were written."""
        ...


class UnitOfWork(Protocol):
    """One atomic piece of work on the store: its staged writes commit together or none do.

    Used as an async context manager; leaving it without ``commit()`` drops what was staged.
    Raises ``StorageUnavailable`` when the store cannot be reached in time.

    The events the aggregates it changed recorded commit with the rest: those published go
    into the outbox in the same transaction, and ``collect_new_events`` hands them all over
    afterwards, once.
    """

    @property
    def orders(self) -> OrderRepository: ...

    @property
    def payments(self) -> PaymentRepository: ...

    @property
    def idempotency(self) -> IdempotencyRepository: ...

    @property
    def audit(self) -> AuditTrail: ...

    @property
    def events(self) -> EventLog: ...

    @property
    def refunds(self) -> RefundRepository: ...

    @property
    def refund_audit(self) -> RefundAuditTrail: ...

    def collect_new_events(self) -> list[Event]:
        """The events committed since the last call, oldest first."""
        ...

    async def ground_for(self, order_id: int, *, caller: str, key: str | None) -> AttemptGround:
        """The order, the kept answer of ``key`` (when given) and, when the order looks
        payable, an id for its payment: what deciding an attempt needs, in one read."""
        ...

    async def refund_ground_for(
        self, payment_id: int, *, caller: str, key: str | None
    ) -> RefundGround:
        """The payment with what has been refunded of it, the kept answer of ``key`` (when
        given) and, when something remains to refund, an id for the refund: in one read."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None:
        """Make every staged write durable at once, or none of them: ``ConcurrentChange``
        (nothing written) when a condition of a staged write no longer holds. Staged writes
        are dropped either way."""
        ...


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...
