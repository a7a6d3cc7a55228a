"""The refund routes: refund a payment, in full or in parts; read refunds back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from payment.domain import refunding
from payment.domain.model import MAX_ID
from payment.domain.refunds import RefundAttempt
from payment.entrypoints.http.answers import refund_answer_for, response_for
from payment.entrypoints.http.body import decode_json_object, read_body, require_json, validate
from payment.entrypoints.http.dependencies import Services, caller_of
from payment.entrypoints.http.openapi import (
    json_request_body,
    parameter_validation_example,
    problem_responses,
)
from payment.entrypoints.http.problems import (
    IDEMPOTENCY_KEY_REUSED,
    MALFORMED_REQUEST,
    PAYLOAD_TOO_LARGE,
    PAYMENT_NOT_FOUND,
    PAYMENT_NOT_REFUNDABLE,
    REFUND_EXCEEDS_PAYMENT,
    REFUND_NOT_FOUND,
    SERVICE_UNAVAILABLE,
    UNSUPPORTED_MEDIA_TYPE,
    VALIDATION_ERROR,
)
from payment.entrypoints.http.request_id import request_id_of
from payment.entrypoints.http.routes import IDEMPOTENCY_KEY_PARAMETER, idempotency_key_of
from payment.entrypoints.http.schemas import PaymentRefunds, RefundRequest, RefundView

router = APIRouter(tags=["refunds"])

PaymentId = Annotated[int, Path(ge=1, le=MAX_ID, description="The payment's id.")]


@router.post(
    "/payments/{payment_id}/refunds",
    summary="Refund a payment, in full or in part, exactly once",
    status_code=201,
    response_model=RefundView,
    responses=problem_responses(
        MALFORMED_REQUEST,
        PAYMENT_NOT_FOUND,
        PAYMENT_NOT_REFUNDABLE,
        PAYLOAD_TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        VALIDATION_ERROR,
        REFUND_EXCEEDS_PAYMENT,
        IDEMPOTENCY_KEY_REUSED,
        SERVICE_UNAVAILABLE,
    ),
    openapi_extra={**json_request_body(RefundRequest), "parameters": [IDEMPOTENCY_KEY_PARAMETER]},
)
async def refund_payment(payment_id: PaymentId, request: Request) -> Response:
    """Gives back `amount` of the payment (all that remains when it is left out), never more
    than remains: the refunds of a payment never add up to more than it, however many arrive
    at once. The order is left as it is; the shop learns of the refund from its
    `refund.succeeded` event. A 201 is a committed refund; a retry with the same
    `Idempotency-Key` gets it again and refunds nothing more."""
    require_json(request)  # before a byte of the body is read
    body = validate(RefundRequest, decode_json_object(await read_body(request)))
    key = idempotency_key_of(request)
    services: Services = request.app.state.services
    attempt = RefundAttempt(
        payment_id=payment_id,
        caller=caller_of(request),
        request_id=request_id_of(request),
        amount=body.amount,
        reason=body.reason,
        idempotency_key=key,
    )
    reply = await refunding.refund(
        attempt,
        uow=services.unit_of_work(),
        clock=services.clock,
        answer_for=refund_answer_for,
        key_retention=services.key_retention,
        bus=services.bus,
    )
    return response_for(reply)


@router.get(
    "/refunds/{refund_id}",
    summary="A refund",
    response_model=RefundView,
    responses=problem_responses(
        REFUND_NOT_FOUND,
        VALIDATION_ERROR,
        SERVICE_UNAVAILABLE,
        examples={VALIDATION_ERROR: parameter_validation_example("refund_id")},
    ),
)
async def get_refund(
    refund_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The refund's id.")],
    request: Request,
) -> RefundView:
    services: Services = request.app.state.services
    return RefundView.of(await refunding.get_refund(refund_id, uow=services.unit_of_work()))


@router.get(
    "/payments/{payment_id}/refunds",
    summary="A payment's refunds, oldest first",
    response_model=PaymentRefunds,
    responses=problem_responses(
        PAYMENT_NOT_FOUND,
        VALIDATION_ERROR,
        SERVICE_UNAVAILABLE,
        examples={VALIDATION_ERROR: parameter_validation_example("payment_id")},
    ),
)
async def get_payment_refunds(payment_id: PaymentId, request: Request) -> PaymentRefunds:
    services: Services = request.app.state.services
    payment, refunds = await refunding.refunds_of_payment(payment_id, uow=services.unit_of_work())
    return PaymentRefunds(
        payment_id=payment_id,
        amount=payment.amount.amount,
        amount_refunded=payment.amount_refunded.amount,
        refunded=payment.refunded,
        refunds=[RefundView.of(refund) for refund in refunds],
    )
