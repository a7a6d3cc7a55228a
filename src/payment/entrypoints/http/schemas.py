"""The bodies of the API, as pydantic models: the contract that /openapi.json shows."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from payment.domain.model import MAX_AMOUNT, MAX_ORDER_ID, Money, Payment
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


class PaymentView(BaseModel):
    """A payment that is committed and durable."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PAYMENT_EXAMPLE]})

    order_id: int
    payment_id: int
    amount: Annotated[Decimal, Field(description="Exact, as a decimal string.")]
    status: str
    created_at: datetime

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


class PaymentReceipt(PaymentView):
    """The answer to a payment: the payment, committed and durable."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"message": "Payment successful", **_PAYMENT_EXAMPLE}]}
    )

    message: Literal["Payment successful"] = "Payment successful"


class OrderPayments(BaseModel):
    """An order's payments, oldest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"order_id": 123, "payments": [_PAYMENT_EXAMPLE]}]}
    )

    order_id: int
    payments: list[PaymentView]


class Health(BaseModel):
    """A probe's answer."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ready"}]})

    status: Literal["ok", "ready"]
