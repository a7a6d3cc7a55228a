"""The routes. Each parses, calls one use case and maps the outcome."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse

from payment.domain import services as use_cases
from payment.domain.attempts import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    Outcome,
    PaymentAttempt,
    idempotency_key,
)
from payment.domain.errors import IdempotencyKeyReused, InvalidIdempotencyKey
from payment.entrypoints.http.answers import REPLAYED_HEADER, answer_for, log_decision, response_for
from payment.entrypoints.http.body import decode_json_object, read_body, validate
from payment.entrypoints.http.dependencies import Services, caller_of, get_services
from payment.entrypoints.http.openapi import json_request_body, problem_responses
from payment.entrypoints.http.problems import (
    AMOUNT_MISMATCH,
    IDEMPOTENCY_KEY_IN_USE,
    IDEMPOTENCY_KEY_REUSED,
    MALFORMED_REQUEST,
    ORDER_NOT_FOUND,
    ORDER_NOT_PAYABLE,
    PAYLOAD_TOO_LARGE,
    RETRY_AFTER_SECONDS,
    SERVICE_UNAVAILABLE,
    VALIDATION_ERROR,
    FieldError,
    ProblemError,
)
from payment.entrypoints.http.request_id import request_id_of
from payment.entrypoints.http.schemas import PaymentReceipt, PayRequest

router = APIRouter()
ServicesDep = Annotated[Services, Depends(get_services)]


async def pay_request(request: Request) -> PayRequest:
    return validate(PayRequest, decode_json_object(await read_body(request)))


IDEMPOTENCY_KEY_DESCRIPTION = (
    f"1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII characters, unique per request (a UUID is "
    "a good choice). A retry with the same key and body gets the first answer again, marked "
    f"`{REPLAYED_HEADER}: true`, and never pays twice. Keys are kept at least 24 hours."
)


def idempotency_key_header(
    request: Request,
    key: Annotated[
        str | None, Header(alias="Idempotency-Key", description=IDEMPOTENCY_KEY_DESCRIPTION)
    ] = None,
) -> str | None:
    values = request.headers.getlist("idempotency-key")
    try:
        if len(values) > 1:
            raise InvalidIdempotencyKey("Idempotency-Key must be sent once")
        return None if key is None else idempotency_key(key)
    except InvalidIdempotencyKey as error:
        raise ProblemError(
            VALIDATION_ERROR,
            "The request is invalid.",
            errors=[FieldError(header="Idempotency-Key", detail=str(error))],
        ) from None


@router.post(
    "/pay",
    summary="Pay an order in full, exactly once",
    response_model=PaymentReceipt,
    responses=problem_responses(
        MALFORMED_REQUEST,
        ORDER_NOT_FOUND,
        ORDER_NOT_PAYABLE,
        IDEMPOTENCY_KEY_IN_USE,
        PAYLOAD_TOO_LARGE,
        VALIDATION_ERROR,
        AMOUNT_MISMATCH,
        IDEMPOTENCY_KEY_REUSED,
        SERVICE_UNAVAILABLE,
    ),
    openapi_extra=json_request_body(PayRequest),
)
def pay(
    body: Annotated[PayRequest, Depends(pay_request)],
    key: Annotated[str | None, Depends(idempotency_key_header)],
    request: Request,
    services: ServicesDep,
) -> Response:
    """Checks the amount against the order's total, marks the order paid and records the
    payment, in one transaction. A 200 is a committed payment."""
    attempt = PaymentAttempt(
        order_id=body.order_id,
        amount=body.amount,
        caller=caller_of(request),
        request_id=request_id_of(request),
        idempotency_key=key,
    )
    try:
        reply = use_cases.pay(
            attempt,
            uow=services.unit_of_work(),
            clock=services.clock,
            answer_for=answer_for,
            key_retention=services.key_retention,
        )
    except IdempotencyKeyReused:
        log_decision(attempt, Outcome.IDEMPOTENCY_KEY_REUSED, IDEMPOTENCY_KEY_REUSED.status)
        raise
    log_decision(attempt, reply.outcome, reply.answer.status, reply.payment)
    return response_for(reply)


@router.get("/livez", summary="The process serves", tags=["operations"])
def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database answers",
    tags=["operations"],
    responses=problem_responses(SERVICE_UNAVAILABLE),
)
def readyz(services: ServicesDep) -> JSONResponse:
    if not services.database_ready():
        return SERVICE_UNAVAILABLE.response(
            "The database does not answer.", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
    return JSONResponse({"status": "ready"})
