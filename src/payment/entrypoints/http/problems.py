"""RFC 9457 problem details: the one table from errors to HTTP answers, and their handlers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from payment.adapters.logging import error_summary
from payment.domain.errors import (
    AmountMismatch,
    EventNotFound,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    OrderNotFound,
    OrderNotPayable,
    PaymentNotFound,
    PaymentNotRefundable,
    RefundExceedsPayment,
    RefundNotFound,
    StorageUnavailable,
    TooMuchContention,
    WriteUnconfirmed,
)

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 1

logger = logging.getLogger(__name__)


class FieldError(BaseModel):
    """One fault: in a member of the body (``pointer``), a request header (``header``) or a
    path or query parameter (``parameter``)."""

    pointer: str | None = Field(
        default=None, description="JSON Pointer (RFC 6901) to the offending member of the body"
    )
    header: str | None = Field(default=None, description="the offending request header")
    parameter: str | None = Field(default=None, description="the offending path or query parameter")
    detail: str


class Problem(BaseModel):
    """An error, as RFC 9457 problem details with a stable snake_case ``code``."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldError] | None = Field(
        default=None, description="validation_error only: each member at fault"
    )
    order_status: str | None = Field(
        default=None, description="order_not_payable only: the order's current status"
    )
    amount_refundable: str | None = Field(
        default=None,
        description="refund_exceeds_payment only: what remains of the payment to refund",
    )


class ProblemError(Exception):
    """An HTTP-level problem raised by the HTTP layer itself (body, size, validation)."""

    def __init__(
        self, kind: ProblemKind, detail: str, *, errors: list[FieldError] | None = None
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.errors = errors


@dataclass(frozen=True, slots=True)
class ProblemKind:
    status: int
    code: str
    title: str

    @property
    def type(self) -> str:
        return f"/problems/{self.code.replace('_', '-')}"

    def body(self, detail: str, **extra: Any) -> dict[str, Any]:
        return {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": detail,
            "code": self.code,
            **{key: value for key, value in extra.items() if value is not None},
        }

    def response(
        self, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
    ) -> JSONResponse:
        return JSONResponse(
            self.body(detail, **extra),
            status_code=self.status,
            headers=headers,
            media_type=PROBLEM_JSON,
        )


MALFORMED_REQUEST = ProblemKind(400, "malformed_request", "Malformed request")
UNAUTHORIZED = ProblemKind(401, "unauthorized", "Unauthorized")
NOT_FOUND = ProblemKind(404, "not_found", "Not found")
ORDER_NOT_FOUND = ProblemKind(404, "order_not_found", "Order not found")
PAYMENT_NOT_FOUND = ProblemKind(404, "payment_not_found", "Payment not found")
EVENT_NOT_FOUND = ProblemKind(404, "event_not_found", "Event not found")
REFUND_NOT_FOUND = ProblemKind(404, "refund_not_found", "Refund not found")
PAYMENT_NOT_REFUNDABLE = ProblemKind(409, "payment_not_refundable", "Payment not refundable")
REFUND_EXCEEDS_PAYMENT = ProblemKind(422, "refund_exceeds_payment", "Refund exceeds payment")
METHOD_NOT_ALLOWED = ProblemKind(405, "method_not_allowed", "Method not allowed")
ORDER_NOT_PAYABLE = ProblemKind(409, "order_not_payable", "Order not payable")
IDEMPOTENCY_KEY_IN_USE = ProblemKind(409, "idempotency_key_in_use", "Idempotency key in use")
PAYLOAD_TOO_LARGE = ProblemKind(413, "payload_too_large", "Payload too large")
UNSUPPORTED_MEDIA_TYPE = ProblemKind(415, "unsupported_media_type", "Unsupported media type")
VALIDATION_ERROR = ProblemKind(422, "validation_error", "Invalid request")
AMOUNT_MISMATCH = ProblemKind(422, "amount_mismatch", "Amount mismatch")
IDEMPOTENCY_KEY_REUSED = ProblemKind(422, "idempotency_key_reused", "Idempotency key reused")
INTERNAL_ERROR = ProblemKind(500, "internal_error", "Internal error")
SERVICE_UNAVAILABLE = ProblemKind(503, "service_unavailable", "Service unavailable")
CLIENT_CLOSED_REQUEST = ProblemKind(499, "client_closed_request", "Client closed request")
"""The client left before sending its whole request: nobody reads this answer, but the access
line and the metrics carry its status (499, as nginx names it) rather than a 500."""

DOMAIN_PROBLEMS: dict[type[Exception], ProblemKind] = {
    OrderNotFound: ORDER_NOT_FOUND,
    OrderNotPayable: ORDER_NOT_PAYABLE,
    PaymentNotFound: PAYMENT_NOT_FOUND,
    EventNotFound: EVENT_NOT_FOUND,
    RefundNotFound: REFUND_NOT_FOUND,
    PaymentNotRefundable: PAYMENT_NOT_REFUNDABLE,
    RefundExceedsPayment: REFUND_EXCEEDS_PAYMENT,
    AmountMismatch: AMOUNT_MISMATCH,
    IdempotencyKeyInUse: IDEMPOTENCY_KEY_IN_USE,
    IdempotencyKeyReused: IDEMPOTENCY_KEY_REUSED,
    StorageUnavailable: SERVICE_UNAVAILABLE,
    TooMuchContention: SERVICE_UNAVAILABLE,
}
"""The domain's errors and what each is over HTTP. AmountMismatch never states the total."""

_UNAVAILABLE_DETAIL = (
    "The database could not be reached in time. Nothing was written; retry shortly."
)
_UNCONFIRMED_DETAIL = (
    "The database did not confirm the write in time: it may have been made. Retry with the "
    "same Idempotency-Key: a payment or refund that was made is then replayed, never made "
    "twice."
)


def problem_kind(error: Exception) -> ProblemKind:
    """The problem a domain error is, through its class or the nearest base in the table."""
    return next(DOMAIN_PROBLEMS[cls] for cls in type(error).__mro__ if cls in DOMAIN_PROBLEMS)


def problem_body(error: Exception) -> dict[str, Any]:
    """The problem details of a domain error that is a decision (no header needed)."""
    extra: dict[str, Any] = {}
    if isinstance(error, OrderNotPayable):
        extra = {"order_status": error.status}
    elif isinstance(error, RefundExceedsPayment):
        extra = {"amount_refundable": str(error.refundable)}
    return problem_kind(error).body(str(error), **extra)


_RETRY_AFTER = {"Retry-After": str(RETRY_AFTER_SECONDS)}


async def _domain_error(request: Request, error: Exception) -> JSONResponse:
    kind = problem_kind(error)
    if isinstance(error, StorageUnavailable):
        # The cause's class and the first line of its message (e.g. a role that does not
        # exist), with anything like a password or a connection string masked.
        logger.warning(
            "database unavailable: %s",
            "unknown cause" if error.__cause__ is None else error_summary(error.__cause__),
            extra={"fields": {"request_id": getattr(request.state, "request_id", None)}},
        )
        unconfirmed = isinstance(error, WriteUnconfirmed)
        detail = _UNCONFIRMED_DETAIL if unconfirmed else _UNAVAILABLE_DETAIL
        return kind.response(detail, headers=_RETRY_AFTER)
    if isinstance(error, IdempotencyKeyInUse | TooMuchContention):
        return kind.response(str(error), headers=_RETRY_AFTER)
    body = problem_body(error)
    return JSONResponse(body, status_code=kind.status, media_type=PROBLEM_JSON)


async def _problem_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ProblemError)
    errors = (
        None if error.errors is None else [e.model_dump(exclude_none=True) for e in error.errors]
    )
    return error.kind.response(error.detail, errors=errors)


_LOCATIONS = {"body": "pointer", "header": "header", "path": "parameter", "query": "parameter"}


def _place(location: tuple[int | str, ...]) -> str:
    if location[0] in _LOCATIONS and location[0] != "body":
        return str(location[1])
    return pointer(location[1:])


async def _request_validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = [
        {_LOCATIONS.get(e["loc"][0], "pointer"): _place(e["loc"]), "detail": e["msg"]}
        for e in error.errors()
    ]
    return VALIDATION_ERROR.response("The request is invalid.", errors=errors)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    kind = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED}.get(error.status_code)
    if kind is None:
        phrase = HTTPStatus(error.status_code).phrase
        kind = ProblemKind(error.status_code, phrase.lower().replace(" ", "_"), phrase)
    headers = error.headers
    if error.status_code == 405:
        # Starlette names the methods of the first route of the path only; a path served by
        # several (GET and POST of /payments/{payment_id}/refunds) allows them all.
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return kind.response(str(error.detail), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(request.url.path):
            methods |= route.methods
    return sorted(methods)


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    # Answered outside every middleware, so the request id is added here.
    request_id = getattr(request.state, "request_id", None)
    logger.error("unexpected error", exc_info=error, extra={"fields": {"request_id": request_id}})
    headers = None if request_id is None else {"X-Request-ID": request_id}
    return INTERNAL_ERROR.response("The request could not be completed.", headers=headers)


def pointer(location: tuple[int | str, ...] | list[int | str]) -> str:
    """A JSON Pointer (RFC 6901) to a member, from a validation error's location."""
    return "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in location)


def install_problem_handlers(app: FastAPI) -> None:
    for error_type in DOMAIN_PROBLEMS:
        app.add_exception_handler(error_type, _domain_error)
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
