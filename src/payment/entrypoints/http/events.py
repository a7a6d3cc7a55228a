"""The events told to the shop, readable again: for a consumer that missed some (SPEC §3.8).

Each event is answered with the bytes the outbox keeps, the same the webhooks and the broker
carry; a page of them is the stored bodies side by side. The cursor is opaque to consumers:
pass back ``next_after`` as ``after``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from payment.domain import services as use_cases
from payment.domain.refunds import RefundReason
from payment.entrypoints.http.dependencies import Services
from payment.entrypoints.http.openapi import problem_responses
from payment.entrypoints.http.problems import (
    EVENT_NOT_FOUND,
    SERVICE_UNAVAILABLE,
    VALIDATION_ERROR,
)

router = APIRouter(tags=["events"])

MAX_PAGE = 1000
MAX_CURSOR = 2**63 - 1

_DATA_EXAMPLE: dict[str, Any] = {
    "order_id": 123,
    "payment_id": 456,
    "amount": "199.99",
    "created_at": "2026-11-26T10:15:00Z",
}
_EVENT_EXAMPLE: dict[str, Any] = {
    "specversion": "1.0",
    "id": "0b6f4c1e-5d3a-4a51-9a07-3f7f2b2f9c11",
    "source": "/payment-service",
    "type": "payment.succeeded",
    "subject": "123",
    "time": "2026-11-26T10:15:00Z",
    "datacontenttype": "application/json",
    "data": _DATA_EXAMPLE,
}


class PaymentSucceededData(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_DATA_EXAMPLE]})

    order_id: int
    payment_id: int
    amount: Annotated[str, Field(description="Exact, as a decimal string.")]
    created_at: datetime


class RefundSucceededData(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "refund_id": 17,
                    "payment_id": 456,
                    "order_id": 123,
                    "amount": "5.00",
                    "amount_refunded": "5.00",
                    "reason": "requested_by_customer",
                    "created_at": "2026-11-27T09:00:00Z",
                }
            ]
        }
    )

    refund_id: int
    payment_id: int
    order_id: int
    amount: Annotated[str, Field(description="Exact, as a decimal string.")]
    amount_refunded: Annotated[
        str, Field(description="Of the payment, this refund included; a decimal string.")
    ]
    reason: RefundReason | None
    created_at: datetime


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in structured JSON. ``id`` is the same on every delivery: the
    consumers' deduplication key. ``payment.succeeded`` carries a payment's data,
    ``refund.succeeded`` a refund's."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EVENT_EXAMPLE]})

    specversion: Literal["1.0"]
    id: str
    source: str
    type: Literal["payment.succeeded", "refund.succeeded"]
    subject: Annotated[str, Field(description="The order's id.")]
    time: datetime
    datacontenttype: Literal["application/json"]
    data: PaymentSucceededData | RefundSucceededData


class EventPage(BaseModel):
    """Events in the order they were written, oldest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"events": [_EVENT_EXAMPLE], "next_after": "1"}]}
    )

    events: list[CloudEvent]
    next_after: Annotated[
        str,
        Field(
            description="Pass it as `after` for the next page; the same one when no event "
            "was newer."
        ),
    ]


@router.get(
    "/events/{event_id}",
    summary="An event, by its id",
    response_model=CloudEvent,
    responses=problem_responses(EVENT_NOT_FOUND, VALIDATION_ERROR, SERVICE_UNAVAILABLE),
)
async def get_event(
    event_id: Annotated[UUID, Path(description="The event's id (a UUID).")],
    request: Request,
) -> Response:
    services: Services = request.app.state.services
    event = await use_cases.get_event(str(event_id), uow=services.unit_of_work())
    return Response(event.body, media_type="application/json")


@router.get(
    "/events",
    summary="Events written after a cursor, oldest first",
    response_model=EventPage,
    responses=problem_responses(VALIDATION_ERROR, SERVICE_UNAVAILABLE),
)
async def list_events(
    request: Request,
    after: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_CURSOR,
            description="`next_after` of the previous page; 0 (the "
            "default) for the first event ever written.",
        ),
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="At most this many.")] = 100,
) -> Response:
    services: Services = request.app.state.services
    events = await use_cases.events_after(after, limit=limit, uow=services.unit_of_work())
    cursor = events[-1].position if events else after
    body = '{"events":[' + ",".join(e.body for e in events) + f'],"next_after":"{cursor}"}}'
    return Response(body, media_type="application/json")
