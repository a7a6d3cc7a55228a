"""The routes. Each parses, calls one use case and maps the outcome."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from payment.domain import services as use_cases
from payment.entrypoints.http.body import decode_json_object, read_body, validate
from payment.entrypoints.http.dependencies import Services, get_services
from payment.entrypoints.http.openapi import json_request_body, problem_responses
from payment.entrypoints.http.problems import (
    AMOUNT_MISMATCH,
    MALFORMED_REQUEST,
    ORDER_NOT_FOUND,
    ORDER_NOT_PAYABLE,
    PAYLOAD_TOO_LARGE,
    RETRY_AFTER_SECONDS,
    SERVICE_UNAVAILABLE,
    VALIDATION_ERROR,
)
from payment.entrypoints.http.schemas import PaymentReceipt, PayRequest

router = APIRouter()
ServicesDep = Annotated[Services, Depends(get_services)]


async def pay_request(request: Request) -> PayRequest:
    return validate(PayRequest, decode_json_object(await read_body(request)))


@router.post(
    "/pay",
    summary="Pay an order in full, exactly once",
    response_model=PaymentReceipt,
    responses=problem_responses(
        MALFORMED_REQUEST,
        ORDER_NOT_FOUND,
        ORDER_NOT_PAYABLE,
        PAYLOAD_TOO_LARGE,
        VALIDATION_ERROR,
        AMOUNT_MISMATCH,
        SERVICE_UNAVAILABLE,
    ),
    openapi_extra=json_request_body(PayRequest),
)
def pay(body: Annotated[PayRequest, Depends(pay_request)], services: ServicesDep) -> PaymentReceipt:
    """Checks the amount against the order's total, marks the order paid and records the
    payment, in one transaction. A 200 is a committed payment."""
    payment = use_cases.pay(
        body.order_id, body.amount, uow=services.unit_of_work(), clock=services.clock
    )
    return PaymentReceipt.of(payment)


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
