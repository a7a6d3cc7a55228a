"""The events the shop is told, as CloudEvents 1.0 in structured JSON (the SDK's format).

The body is made once, when the event commits, and stored in the outbox as it will be
delivered: every delivery and every read of the event carries the same bytes and the same id.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from payment.domain.events import PaymentSucceeded, RefundSucceeded

CONTENT_TYPE = "application/cloudevents+json"
DEFAULT_SOURCE = "/payment-service"
_FORMAT = JSONFormat()


def new_event_id() -> str:
    """A new event id: a UUID version 7 (RFC 9562), 48 bits of Unix milliseconds then 74
    random bits. Ids made later sort later, so the outbox's index on them grows at its end
    rather than at random places, which a version 4 id would cost on every payment."""
    milliseconds = time.time_ns() // 1_000_000 & _MILLISECONDS_MASK
    random_bits = int.from_bytes(os.urandom(10))
    value = (
        milliseconds << 80
        | 0x7 << 76  # the version
        | (random_bits >> 62 & 0xFFF) << 64
        | 0b10 << 62  # the RFC 9562 variant
        | random_bits & _LOW_62_BITS
    )
    return str(uuid.UUID(int=value))


_MILLISECONDS_MASK = (1 << 48) - 1
_LOW_62_BITS = (1 << 62) - 1


def utc_text(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as the HTTP answers write times."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def payment_succeeded(event: PaymentSucceeded, *, event_id: str, source: str) -> str:
    """The ``payment.succeeded`` CloudEvent: the order is its subject, the amount a string."""
    data = {
        "order_id": event.order_id,
        "payment_id": event.payment_id,
        "amount": str(event.amount),
        "created_at": utc_text(event.created_at),
    }
    return _structured(
        event.type,
        event_id=event_id,
        source=source,
        subject=str(event.order_id),
        time=event.created_at,
        data=data,
    )


def refund_succeeded(event: RefundSucceeded, *, event_id: str, source: str) -> str:
    """The ``refund.succeeded`` CloudEvent: the order is its subject, amounts are strings."""
    data = {
        "refund_id": event.refund_id,
        "payment_id": event.payment_id,
        "order_id": event.order_id,
        "amount": str(event.amount),
        "amount_refunded": str(event.amount_refunded),
        "reason": None if event.reason is None else event.reason.value,
        "created_at": utc_text(event.created_at),
    }
    return _structured(
        event.type,
        event_id=event_id,
        source=source,
        subject=str(event.order_id),
        time=event.created_at,
        data=data,
    )


def structured(event: PaymentSucceeded | RefundSucceeded, *, event_id: str, source: str) -> str:
    """The event as the shop is told it."""
    if isinstance(event, PaymentSucceeded):
        return payment_succeeded(event, event_id=event_id, source=source)
    return refund_succeeded(event, event_id=event_id, source=source)


def _structured(
    type_: str, *, event_id: str, source: str, subject: str, time: datetime, data: dict[str, Any]
) -> str:
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": type_,
        "subject": subject,
        "time": time.astimezone(UTC),
        "datacontenttype": "application/json",
    }
    return _FORMAT.write(CloudEvent(attributes, data)).decode()
