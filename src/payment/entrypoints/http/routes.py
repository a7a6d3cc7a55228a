"""The routes. Each parses, calls one use case and maps the outcome."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from payment.domain import services as use_cases
from payment.domain.attempts import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    PaymentAttempt,
    idempotency_key,
)
from payment.domain.errors import InvalidIdempotencyKey
from payment.domain.model import MAX_ID
from payment.entrypoints.http.answers import REPLAYED_HEADER, answer_for, response_for
from payment.entrypoints.http.body import decode_json_object, read_body, require_json, validate
from payment.entrypoints.http.dependencies import Services, caller_of, get_services
from payment.entrypoints.http.observe import Metrics
from payment.entrypoints.http.openapi import (
    json_request_body,
    parameter_validation_example,
    problem_responses,
)
from payment.entrypoints.http.problems import (
    AMOUNT_MISMATCH,
    IDEMPOTENCY_KEY_IN_USE,
    IDEMPOTENCY_KEY_REUSED,
    MALFORMED_REQUEST,
    ORDER_NOT_FOUND,
    ORDER_NOT_PAYABLE,
    PAYLOAD_TOO_LARGE,
    PAYMENT_NOT_FOUND,
    RETRY_AFTER_SECONDS,
    SERVICE_UNAVAILABLE,
    UNSUPPORTED_MEDIA_TYPE,
    VALIDATION_ERROR,
    FieldError,
    ProblemError,
)
from payment.entrypoints.http.request_id import request_id_of
from payment.entrypoints.http.schemas import (
    Health,
    OrderPayments,
    PaymentReceipt,
    PaymentView,
    PayRequest,
)

router = APIRouter()
PAYMENTS: list[str | Enum] = ["payments"]
ServicesDep = Annotated[Services, Depends(get_services)]


IDEMPOTENCY_KEY_DESCRIPTION = (
    f"1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII characters, unique per request (a UUID is "
    "a good choice). A retry with the same key and body gets the first answer again, marked "
    f"`{REPLAYED_HEADER}: true`, and never pays twice. Keys are kept at least 24 hours."
)
IDEMPOTENCY_KEY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": IDEMPOTENCY_KEY_DESCRIPTION,
    # Documented here, checked by the domain's own rule (idempotency_key), with its own words.
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
        "pattern": "^[!-~]+$",
        "title": "Idempotency-Key",
    },
}


def idempotency_key_of(request: Request) -> str | None:
    """The request's Idempotency-Key, when it sent one; a 422 problem when it is not a valid
    key or was sent twice."""
    values = request.headers.getlist("idempotency-key")
    try:
        if len(values) > 1:
            raise InvalidIdempotencyKey("Idempotency-Key must be sent once")
        return idempotency_key(values[0]) if values else None
    except InvalidIdempotencyKey as error:
        raise ProblemError(
            VALIDATION_ERROR,
            "The request is invalid.",
            errors=[FieldError(header="Idempotency-Key", detail=str(error))],
        ) from None


@router.post(
    "/pay",
    summary="Pay an order in full, exactly once",
    tags=PAYMENTS,
    response_model=PaymentReceipt,
    responses=problem_responses(
        MALFORMED_REQUEST,
        ORDER_NOT_FOUND,
        ORDER_NOT_PAYABLE,
        IDEMPOTENCY_KEY_IN_USE,
        PAYLOAD_TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        VALIDATION_ERROR,
        AMOUNT_MISMATCH,
        IDEMPOTENCY_KEY_REUSED,
        SERVICE_UNAVAILABLE,
    ),
    openapi_extra={**json_request_body(PayRequest), "parameters": [IDEMPOTENCY_KEY_PARAMETER]},
)
async def pay(request: Request) -> Response:
    """Checks the amount against the order's total, marks the order paid and records the
    payment, in one transaction. A 200 is a committed payment."""
    # Parsed here rather than through dependencies: FastAPI's dependency solving cost more than
    # the rest of the request's Python work. The document above says what is read.
    require_json(request)  # before a byte of the body is read
    body = validate(PayRequest, decode_json_object(await read_body(request)))
    key = idempotency_key_of(request)
    services: Services = request.app.state.services
    attempt = PaymentAttempt(
        order_id=body.order_id,
        amount=body.amount,
        caller=caller_of(request),
        request_id=request_id_of(request),
        idempotency_key=key,
    )
    reply = await use_cases.pay(
        attempt,
        uow=services.unit_of_work(),
        clock=services.clock,
        answer_for=answer_for,
        key_retention=services.key_retention,
        bus=services.bus,
    )
    return response_for(reply)


@router.get(
    "/payments/{payment_id}",
    summary="A payment",
    tags=PAYMENTS,
    response_model=PaymentView,
    responses=problem_responses(
        PAYMENT_NOT_FOUND,
        VALIDATION_ERROR,
        SERVICE_UNAVAILABLE,
        examples={VALIDATION_ERROR: parameter_validation_example("payment_id")},
    ),
)
async def get_payment(
    payment_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The payment's id.")],
    services: ServicesDep,
) -> PaymentView:
    return PaymentView.of(await use_cases.get_payment(payment_id, uow=services.unit_of_work()))


@router.get(
    "/orders/{order_id}/payments",
    summary="An order's payments, oldest first",
    tags=PAYMENTS,
    response_model=OrderPayments,
    responses=problem_responses(
        ORDER_NOT_FOUND,
        VALIDATION_ERROR,
        SERVICE_UNAVAILABLE,
        examples={VALIDATION_ERROR: parameter_validation_example("order_id")},
    ),
)
async def get_order_payments(
    order_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The order's id.")],
    services: ServicesDep,
) -> OrderPayments:
    payments = await use_cases.payments_of_order(order_id, uow=services.unit_of_work())
    return OrderPayments(order_id=order_id, payments=[PaymentView.of(p) for p in payments])


METRICS_EXAMPLE = """\
# HELP payment_http_requests_total HTTP requests answered, by route template, method and status.
# TYPE payment_http_requests_total counter
payment_http_requests_total{method="POST",route="/pay",status="200"} 1.0
"""

OPERATIONS: list[str | Enum] = ["operations"]
NO_KEY: dict[str, Any] = {"security": []}
"""Probes and metrics: open to orchestrators and scrapers, no key needed."""


@router.get(
    "/livez",
    summary="The process serves",
    response_model=Health,
    tags=OPERATIONS,
    openapi_extra=NO_KEY,
)
async def livez() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="The database answers and the process is not stopping",
    description="The database is asked on a connection of the check's own, never one of the "
    "payments' pool, within `PAYMENT_READY_TIMEOUT_MS`; probes asking at once share one check.",
    response_model=Health,
    responses=problem_responses(SERVICE_UNAVAILABLE),
    tags=OPERATIONS,
    openapi_extra=NO_KEY,
)
async def readyz(request: Request, services: ServicesDep) -> JSONResponse:
    if request.app.state.lifecycle.stopping:
        return SERVICE_UNAVAILABLE.response(
            "The service is shutting down.", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
    if not await services.database_ready():
        return SERVICE_UNAVAILABLE.response(
            "The database does not answer.", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
    return JSONResponse({"status": "ready"})


@router.get(
    "/metrics",
    summary="Prometheus metrics, text format",
    response_class=PlainTextResponse,
    responses={
        200: {
            "content": {
                "text/plain": {
                    "schema": {"type": "string"},
                    "example": METRICS_EXAMPLE,
                }
            }
        }
    },
    tags=OPERATIONS,
    openapi_extra=NO_KEY,
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    # async: nothing here waits (the pool's report is counted, not asked of the database),
    # and a plain function would queue for the thread pool.
    exposed: Metrics = request.app.state.metrics
    if services.pool_report is not None:
        exposed.show_pool(services.pool_report())
    return Response(exposed.exposition(), media_type=exposed.content_type)
