"""What the domain needs from the outside world, stated as protocols it owns."""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from payment.domain.attempts import AuditRecord, IdempotencyRecord, RecordedAnswer
from payment.domain.model import Order, Payment


class OrderRepository(Protocol):
    def get(self, order_id: int) -> Order | None:
        """The order as it is now, without locking it; None if there is no such order."""
        ...

    def get_for_update(self, order_id: int) -> Order | None:
        """The order, locked against concurrent payment until the unit of work ends;
        None if there is no such order."""
        ...

    def mark_paid(self, order: Order) -> None:
        """Store the order as paid at ``order.paid_at``; OrderNotPayable if the stored order
        is no longer pending."""
        ...


class PaymentRepository(Protocol):
    def add(self, payment: Payment) -> Payment:
        """Store a new payment and return it with its id; OrderNotPayable if the order already
        has a succeeded payment."""
        ...

    def get(self, payment_id: int) -> Payment | None:
        """The payment with this id, or None."""
        ...

    def list_for_order(self, order_id: int) -> list[Payment]:
        """The order's payments, oldest first."""
        ...


class IdempotencyRepository(Protocol):
    def claim(
        self, caller: str, key: str, *, fingerprint: str, at: datetime, expires_at: datetime
    ) -> IdempotencyRecord | None:
        """Claim the caller's key for this unit of work and return None; or, when the key
        already has a record, return it. A claim made by another unit of work that has not
        ended is waited for, a bounded time; then ``IdempotencyKeyInUse``."""
        ...

    def record_answer(self, caller: str, key: str, answer: RecordedAnswer) -> None:
        """Keep the answer to the request that claimed the key in this unit of work."""
        ...


class AuditTrail(Protocol):
    def add(self, record: AuditRecord) -> None:
        """Append a record; it commits with the rest of the unit of work, or not at all."""
        ...

    def list_for_order(self, order_id: int) -> list[AuditRecord]:
        """The records about one order, oldest first."""
        ...


class UnitOfWork(Protocol):
    """One atomic piece of work on the store: all its writes commit together or none do.

    Used as a context manager; leaving it without ``commit()`` rolls everything back.
    Raises ``StorageUnavailable`` when the store cannot be reached in time.
    """

    @property
    def orders(self) -> OrderRepository: ...

    @property
    def payments(self) -> PaymentRepository: ...

    @property
    def idempotency(self) -> IdempotencyRepository: ...

    @property
    def audit(self) -> AuditTrail: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None:
        """Make every write of this unit durable, at once."""
        ...


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...
