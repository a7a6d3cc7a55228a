"""What can go wrong, in the domain's words. The HTTP layer maps each to a problem."""

from __future__ import annotations

from decimal import Decimal


class PaymentError(Exception):
    """Base of every error the payment domain raises on purpose."""


class InvalidAmount(PaymentError, ValueError):
    """An amount that money or a payment cannot hold."""


class OrderNotFound(PaymentError):
    def __init__(self, order_id: int) -> None:
        super().__init__(f"Order {order_id} does not exist.")
        self.order_id = order_id


class OrderNotPayable(PaymentError):
    def __init__(self, order_id: int, status: str) -> None:
        super().__init__(f"Order {order_id} is {status}; only a pending order can be paid.")
        self.order_id = order_id
        self.status = status


class AmountMismatch(PaymentError):
    """The claimed amount differs from the order's total. The message never states the total."""

    def __init__(self, order_id: int, claimed: Decimal, total: Decimal) -> None:
        super().__init__(f"The amount does not match the total of order {order_id}.")
        self.order_id = order_id
        self.claimed = claimed
        self.total = total


class StorageUnavailable(Exception):
    """The store could not be reached, or did not answer in time. Nothing was written."""
