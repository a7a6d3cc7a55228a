"""The bodies of the API, as pydantic models: the contract that /openapi.json shows."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from payment.domain.model import MAX_AMOUNT, MAX_ORDER_ID, Money, Payment
from payment.domain.refunds import Refund, RefundReason
from payment.entrypoints.http.body import AMOUNT_PATTERN, exact_amount, whole_number

AMOUNT_SCHEMA = {
    "description": (
        "Greater than 0, at most two decimal places, at most 99999999.99; read exactly, "
        "never as a binary float. A JSON number or a decimal string."
    ),
    "anyOf": [
        {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": float(MAX_AMOUNT),
            "multipleOf": 0.01,
        },
        {"type": "string", "pattern": AMOUNT_PATTERN},
    ],
    "examples": [199.99, "199.99"],
}


class PayRequest(BaseModel):
    """Pay an order in full."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        arbitrary_types_allowed=True,
        json_schema_extra={"examples": [{"order_id": 123, "amount": 199.99}]},
    )

    order_id: Annotated[int, BeforeValidator(whole_number)] = Field(
        ge=1, le=MAX_ORDER_ID, description="The order to pay."
    )
    amount: Annotated[Money, BeforeValidator(exact_amount), WithJsonSchema(AMOUNT_SCHEMA)]


_PAYMENT_EXAMPLE: dict[str, Any] = {
    "order_id": 123,
    "payment_id": 456,
    "amount": "199.99",
    "status": "succeeded",
    "created_at": "2026-11-26T10:15:00Z",
}


_VIEW_EXAMPLE: dict[str, Any] = {**_PAYMENT_EXAMPLE, "amount_refunded": "0.00", "refunded": False}


class _PaymentFields(BaseModel):
    order_id: int
    payment_id: int
    amount: Annotated[Decimal, Field(description="Exact, as a decimal string.")]
    status: str
    created_at: datetime


class PaymentView(_PaymentFields):
    """A payment that is committed and durable, with what has been refunded of it."""

    model_config = ConfigDict(json_schema_extra={"examples": [_VIEW_EXAMPLE]})

    amount_refunded: Annotated[
        Decimal, Field(description="The sum of its refunds, exact, as a decimal string.")
    ]
    refunded: Annotated[bool, Field(description="True once all of it has been refunded.")]

    @classmethod
    def of(cls, payment: Payment) -> Self:
        if payment.id is None:
            raise ValueError("only a stored payment can be shown")
        return cls(
            order_id=payment.order_id,
            payment_id=payment.id,
            amount=payment.amount.amount,
            status=payment.status,
            created_at=payment.created_at,
            amount_refunded=payment.amount_refunded.amount,
            refunded=payment.refunded,
        )


class PaymentReceipt(_PaymentFields):
    """The answer to a payment: the payment, committed and durable."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"message": "Payment successful", **_PAYMENT_EXAMPLE}]}
    )

    message: Literal["Payment successful"] = "Payment successful"

    @classmethod
    def of(cls, payment: Payment) -> Self:
        if payment.id is None:
            raise ValueError("only a stored payment can be shown")
        return cls(
            order_id=payment.order_id,
            payment_id=payment.id,
            amount=payment.amount.amount,
            status=payment.status,
            created_at=payment.created_at,
        )


class OrderPayments(BaseModel):
    """An order's payments, oldest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"order_id": 123, "payments": [_VIEW_EXAMPLE]}]}
    )

    order_id: int
    payments: list[PaymentView]


class Health(BaseModel):
    """A probe's answer."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ready"}]})

    status: Literal["ok", "ready"]


def optional_amount(value: object) -> Money | None:
    """An amount as ``/pay`` reads one, or None when none was given."""
    return None if value is None else exact_amount(value)


class RefundRequest(BaseModel):
    """Refund a payment: all that remains of it, or ``amount`` of it."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        arbitrary_types_allowed=True,
        json_schema_extra={"examples": [{"amount": "5.00", "reason": "requested_by_customer"}, {}]},
    )

    amount: Annotated[
        Money | None,
        BeforeValidator(optional_amount),
        WithJsonSchema(
            {
                **AMOUNT_SCHEMA,
                "description": "Default: all that remains. " + str(AMOUNT_SCHEMA["description"]),
            }
        ),
    ] = None
    reason: RefundReason | None = Field(
        default=None,
        strict=False,  # a JSON string naming one of the reasons, nothing else
        description="Why, for the record: one of the listed reasons.",
    )


_REFUND_EXAMPLE: dict[str, Any] = {
    "refund_id": 17,
    "payment_id": 456,
    "order_id": 123,
    "amount": "5.00",
    "reason": "requested_by_customer",
    "status": "succeeded",
    "created_at": "2026-11-27T09:00:00Z",
}


class RefundView(BaseModel):
    """A refund, committed and durable."""

    model_config = ConfigDict(json_schema_extra={"examples": [_REFUND_EXAMPLE]})

    refund_id: int
    payment_id: int
    order_id: int
    amount: Annotated[Decimal, Field(description="Exact, as a decimal string.")]
    reason: RefundReason | None
    status: str
    created_at: datetime

    @classmethod
    def of(cls, refund: Refund) -> Self:
        if refund.id is None:
            raise ValueError("only a stored refund can be shown")
        return cls(
            refund_id=refund.id,
            payment_id=refund.payment_id,
            order_id=refund.order_id,
            amount=refund.amount.amount,
            reason=refund.reason,
            status=refund.status,
            created_at=refund.created_at,
        )


class PaymentRefunds(BaseModel):
    """A payment's refunds, oldest first, and what has been refunded of it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "payment_id": 456,
                    "amount": "199.99",
                    "amount_refunded": "5.00",
                    "refunded": False,
                    "refunds": [_REFUND_EXAMPLE],
                }
            ]
        }
    )

    payment_id: int
    amount: Annotated[Decimal, Field(description="The payment's, exact.")]
    amount_refunded: Annotated[Decimal, Field(description="The sum of its refunds, exact.")]
    refunded: bool
    refunds: list[RefundView]
