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


class PaymentNotFound(PaymentError):
    def __init__(self, payment_id: int) -> None:
        super().__init__(f"Payment {payment_id} does not exist.")
        self.payment_id = payment_id


class EventNotFound(PaymentError):
    def __init__(self, event_id: str) -> None:
        super().__init__(f"Event {event_id} does not exist.")
        self.event_id = event_id


class RefundNotFound(PaymentError):
    def __init__(self, refund_id: int) -> None:
        super().__init__(f"Refund {refund_id} does not exist.")
        self.refund_id = refund_id


class PaymentNotRefundable(PaymentError):
    """Nothing of the payment remains to refund."""

    def __init__(self, payment_id: int) -> None:
        super().__init__(f"Payment {payment_id} is refunded in full; nothing remains to refund.")
        self.payment_id = payment_id


class RefundExceedsPayment(PaymentError):
    """More was asked than remains of the payment; ``refundable`` says what remains."""

    def __init__(self, payment_id: int, *, requested: Decimal, refundable: Decimal) -> None:
        super().__init__(
            f"A refund of {requested} exceeds what remains of payment {payment_id}: {refundable}."
        )
        self.payment_id = payment_id
        self.requested = requested
        self.refundable = refundable


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


class WriteUnconfirmed(StorageUnavailable):
    """A write was sent and its answer never came (the connection was lost, or the request's
    deadline passed while the store was silent): it may have been made or not. A retry with
    the same idempotency key gets the first answer back if it was, and is decided anew if it
    was not."""


class InvalidIdempotencyKey(PaymentError, ValueError):
    """A key that is not 1 to 255 visible ASCII characters."""


class IdempotencyKeyReused(PaymentError):
    """The caller used this key before, for a different request."""

    def __init__(self, key: str) -> None:
        super().__init__(
            "This Idempotency-Key was used before with a different request; "
            "use a new key for a new request."
        )
        self.key = key


class IdempotencyKeyInUse(PaymentError):
    """A request with the same key is being processed right now."""

    def __init__(self, key: str) -> None:
        super().__init__(
            "A request with this Idempotency-Key is being processed; retry shortly with the "
            "same key to get its answer."
        )
        self.key = key


class ConcurrentChange(Exception):
    """What a decision was based on changed before it committed: the order was paid or
    changed meanwhile, or the idempotency key was taken. Nothing was written; deciding
    again on what is stored now is safe."""


class OrderChanged(ConcurrentChange):
    """The order is no longer as read: another payment, or the order service, changed it."""


class PaymentChanged(ConcurrentChange):
    """The payment's refunds changed since it was read."""


class IdempotencyKeyTaken(ConcurrentChange):
    """Another request with the same key committed first."""


class TooMuchContention(PaymentError):
    """The order kept changing while this request was being decided; nothing was written."""

    def __init__(self, order_id: int) -> None:
        super().__init__(
            f"Order {order_id} changed while this request was being decided; nothing was "
            "written. Retry shortly."
        )
        self.order_id = order_id


class OrderBusy(TooMuchContention):
    """Another request of this process is paying the order and has been at it for a while
    (its write waits, e.g. on a lock held elsewhere): this one is answered at once rather
    than queued behind it. Nothing was written."""

    def __init__(self, order_id: int) -> None:
        PaymentError.__init__(
            self,
            f"Order {order_id} is being paid by another request that has not finished; "
            "nothing was written. Retry shortly.",
        )
        self.order_id = order_id


class RefundContention(TooMuchContention):
    """The payment's refunds kept changing while this refund was being decided; nothing was
    written."""

    def __init__(self, payment_id: int) -> None:
        PaymentError.__init__(
            self,
            f"Payment {payment_id} was refunded by other requests while this one was being "
            "decided; nothing was written. Retry shortly.",
        )
        self.payment_id = payment_id


class PaymentBusy(RefundContention):
    """Another request of this process is refunding the payment and has been at it for a
    while: this one is answered at once rather than queued behind it. Nothing was written."""

    def __init__(self, payment_id: int) -> None:
        PaymentError.__init__(
            self,
            f"Payment {payment_id} is being refunded by another request that has not finished;"
            " nothing was written. Retry shortly.",
        )
        self.payment_id = payment_id
