"""Money, the Order aggregate and the Payment it produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

from payment.domain.errors import InvalidAmount

if TYPE_CHECKING:
    from payment.domain.events import Event
    from payment.domain.policy import PaymentPolicy

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("99999999.99")
"""The largest amount the store holds: NUMERIC(10, 2)."""

MAX_ID = 2_147_483_647
"""Order and payment ids are PostgreSQL INTEGERs."""
MAX_ORDER_ID = MAX_ID


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount of the one currency, in cents: a Decimal of scale 2, never a float."""

    amount: Decimal

    def __post_init__(self) -> None:
        value = self.amount
        if not isinstance(value, Decimal):
            raise InvalidAmount(f"amount must be a Decimal, not {type(value).__name__}")
        if not value.is_finite():
            raise InvalidAmount("amount must be a finite number")
        # adjusted() is the exponent of the leading digit: checking it first keeps quantize()
        # away from the giant exponents that hostile input can carry (1e999999999).
        if value.adjusted() > MAX_AMOUNT.adjusted() or abs(value) > MAX_AMOUNT:
            raise InvalidAmount(f"amount must be at most {MAX_AMOUNT}")
        cents = value.quantize(CENT)
        if cents != value:
            raise InvalidAmount("amount must have at most two decimal places")
        object.__setattr__(self, "amount", cents)

    @classmethod
    def of(cls, text: str) -> Money:
        """Money from its decimal text, e.g. ``Money.of("199.99")``."""
        return cls(Decimal(text))

    @property
    def is_positive(self) -> bool:
        return self.amount > 0

    def __str__(self) -> str:
        return str(self.amount)


def payment_amount(value: Decimal) -> Money:
    """The amount of a payment: money greater than zero. Raises ``InvalidAmount``."""
    money = Money(value)
    if not money.is_positive:
        raise InvalidAmount("amount must be greater than 0")
    return money


class OrderStatus(StrEnum):
    """The statuses the payment service acts on. The order service may use others."""

    PENDING = "pending"
    PAID = "paid"


class PaymentStatus(StrEnum):
    SUCCEEDED = "succeeded"


def aware_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; ValueError when it carries no time zone."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("time must be timezone-aware")
    return moment.astimezone(UTC)


NO_MONEY = Money(Decimal("0.00"))


@dataclass(frozen=True, slots=True)
class Payment:
    """A payment for an order. ``id`` is None until the store has given it one.
    ``amount_refunded``: the sum of its refunds, never more than its amount."""

    order_id: int
    amount: Money
    created_at: datetime
    status: PaymentStatus = PaymentStatus.SUCCEEDED
    id: int | None = None
    amount_refunded: Money = NO_MONEY

    def __post_init__(self) -> None:
        payment_amount(self.amount.amount)
        if not NO_MONEY.amount <= self.amount_refunded.amount <= self.amount.amount:
            raise InvalidAmount("a payment's refunds are between nothing and its amount")
        object.__setattr__(self, "created_at", aware_utc(self.created_at))

    @property
    def refundable(self) -> Money:
        """What may still be refunded."""
        return Money(self.amount.amount - self.amount_refunded.amount)

    @property
    def refunded(self) -> bool:
        """True once all of it has been refunded."""
        return self.amount_refunded == self.amount


@dataclass(slots=True)
class Order:
    """The aggregate: an order of the order service, as far as paying it goes.

    ``status`` is a plain string because the order service owns the table and may hold
    statuses this service does not know; only ``pending`` is payable.
    """

    id: int
    status: str
    total: Money
    paid_at: datetime | None = None
    events: list[Event] = field(default_factory=list, init=False, compare=False, repr=False)
    """What happened to the order since it was read, oldest first; the unit of work collects
    them when it commits."""

    def pay(
        self, amount: Money, *, at: datetime, policy: PaymentPolicy, payment_id: int
    ) -> Payment:
        """Pay the order in full: the policy decides, the order turns paid, a payment is made
        with the id set aside for it, and ``PaymentSucceeded`` is recorded.

        Raises ``OrderNotPayable`` or ``AmountMismatch`` and changes nothing when the policy
        refuses.
        """
        from payment.domain.events import PaymentSucceeded  # events name the model's types

        policy.check(self, amount)
        payment = Payment(order_id=self.id, amount=amount, created_at=at, id=payment_id)
        self.status = OrderStatus.PAID
        self.paid_at = payment.created_at
        self.events.append(PaymentSucceeded.of(payment))
        return payment
