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
from payment.domain.model import Order, Payment


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


class UnitOfWork(Protocol):
    """One atomic piece of work on the store: its staged writes commit together or none do.

    Used as an async context manager; leaving it without ``commit()`` drops what was staged.
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

    async def ground_for(self, order_id: int, *, caller: str, key: str | None) -> AttemptGround:
        """The order, the kept answer of ``key`` (when given) and, when the order looks
        payable, an id for its payment: what deciding an attempt needs, in one read."""
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
