"""The use cases. Each takes a unit of work, lets the model decide, and commits."""

from __future__ import annotations

from payment.domain.errors import OrderNotFound
from payment.domain.model import Money, Payment
from payment.domain.policy import PaymentPolicy
from payment.domain.ports import Clock, UnitOfWork

DEFAULT_POLICY = PaymentPolicy()


def pay(
    order_id: int,
    amount: Money,
    *,
    uow: UnitOfWork,
    clock: Clock,
    policy: PaymentPolicy = DEFAULT_POLICY,
) -> Payment:
    """Pay order ``order_id`` with ``amount``, exactly once.

    The order is locked for the length of the unit of work, so concurrent attempts on the
    same order queue up and all but the first find it paid. The order's change and the
    payment commit together. Raises ``OrderNotFound``, ``OrderNotPayable``,
    ``AmountMismatch`` or ``StorageUnavailable``; none of them leaves a write behind.
    """
    with uow:
        order = uow.orders.get_for_update(order_id)
        if order is None:
            raise OrderNotFound(order_id)
        payment = order.pay(amount, at=clock.now(), policy=policy)
        uow.orders.mark_paid(order)
        stored = uow.payments.add(payment)
        uow.commit()
    return stored
