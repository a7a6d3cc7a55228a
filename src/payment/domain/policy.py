"""When an order may be paid."""

from __future__ import annotations

from payment.domain.errors import AmountMismatch, OrderNotPayable
from payment.domain.model import Money, Order, OrderStatus


class PaymentPolicy:
    """Only a pending order is payable, and only with exactly its total: no partial
    payment, no overpayment, no rounding."""

    def check(self, order: Order, amount: Money) -> None:
        """Raise the reason ``amount`` cannot pay ``order``; return when it can."""
        if order.status != OrderStatus.PENDING:
            raise OrderNotPayable(order.id, order.status)
        if amount != order.total:
            raise AmountMismatch(order.id, claimed=amount.amount, total=order.total.amount)
