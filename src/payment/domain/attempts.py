"""A request to pay as the caller made it, what was decided, and the trail it leaves.

Every attempt that reaches a decision leaves an ``AuditRecord``, committed together with the
decision. An attempt with an idempotency key also leaves the answer it got, so that a retry
with the same key gets the same answer instead of a second payment.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from payment.domain.errors import InvalidIdempotencyKey, PaymentError
from payment.domain.model import Money, Payment, aware_utc

MAX_IDEMPOTENCY_KEY_LENGTH = 255
_VISIBLE_ASCII = frozenset(chr(code) for code in range(0x21, 0x7F))


def idempotency_key(text: str) -> str:
    """``text`` when it is a valid key: 1 to 255 visible ASCII characters, no spaces.
    Raises ``InvalidIdempotencyKey``."""
    if not 1 <= len(text) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidIdempotencyKey(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters long"
        )
    if not _VISIBLE_ASCII.issuperset(text):
        raise InvalidIdempotencyKey("Idempotency-Key must be visible ASCII characters only")
    return text


class Outcome(StrEnum):
    """What an attempt came to. Each is one line of the audit trail."""

    PAID = "paid"
    ORDER_NOT_FOUND = "order_not_found"
    ORDER_NOT_PAYABLE = "order_not_payable"
    AMOUNT_MISMATCH = "amount_mismatch"
    REPLAYED = "replayed"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"


@dataclass(frozen=True, slots=True)
class PaymentAttempt:
    """One request to pay an order: what was claimed, by whom, under which request id and,
    optionally, which idempotency key."""

    order_id: int
    amount: Money
    caller: str
    request_id: str
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        if self.idempotency_key is not None:
            idempotency_key(self.idempotency_key)

    @property
    def fingerprint(self) -> str:
        """The request in normal form, hashed: equal for equal requests however they were
        spelled (``199.9`` and ``"199.90"`` are the same amount)."""
        normal = f"pay\n{self.order_id}\n{self.amount}"
        return hashlib.sha256(normal.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Decision:
    """What the rules decided about an attempt: a payment, or the refusal that stopped it."""

    outcome: Outcome
    payment: Payment | None = None
    refusal: PaymentError | None = None


@dataclass(frozen=True, slots=True)
class RecordedAnswer:
    """The answer an attempt got, as the caller saw it, kept to be replayed unchanged."""

    status: int
    body: str


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """A key's first request (by fingerprint) and the answer it got."""

    fingerprint: str
    answer: RecordedAnswer


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One line of the audit trail."""

    at: datetime
    request_id: str
    caller: str
    order_id: int
    claimed_amount: Money
    outcome: Outcome
    payment_id: int | None = None
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", aware_utc(self.at))

    @classmethod
    def of(
        cls, attempt: PaymentAttempt, outcome: Outcome, *, at: datetime, payment_id: int | None
    ) -> AuditRecord:
        return cls(
            at=at,
            request_id=attempt.request_id,
            caller=attempt.caller,
            order_id=attempt.order_id,
            claimed_amount=attempt.amount,
            outcome=outcome,
            payment_id=payment_id,
            idempotency_key=attempt.idempotency_key,
        )
