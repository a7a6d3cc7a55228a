"""Events in the outbox as the payments' commits write them, for the relay's tests."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text

PAYMENT_SUCCEEDED = "payment.succeeded"
LATER_TYPE = "test.later"
"""For a second event of the same order: only one ``payment.succeeded`` per payment."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    position: int
    event_id: str
    subject: str
    status: str
    attempts: int
    delivered_to: list[str]
    last_error: str | None
    next_attempt_at: datetime
    claimed_until: datetime | None
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class Written:
    position: int
    subject: str
    """The order's id, as the event's subject."""


def add_events(engine: Engine, orders: Sequence[object]) -> list[Written]:
    """One event per entry of ``orders`` (a label: each new label is a new paid order with its
    payment), written in that order. The first event of an order is its ``payment.succeeded``,
    the later ones another type."""
    written = []
    with engine.begin() as connection:
        payments: dict[object, tuple[int, int]] = {}
        for label in orders:
            known = payments.get(label)
            event_type = PAYMENT_SUCCEEDED if known is None else LATER_TYPE
            if known is None:
                order_id = connection.execute(
                    text(
                        "INSERT INTO orders (status, total_price, paid_at)"
                        " VALUES ('paid', 10.00, now() AT TIME ZONE 'UTC') RETURNING id"
                    )
                ).scalar_one()
                payment_id = connection.execute(
                    text(
                        "INSERT INTO payments (order_id, amount, status, created_at)"
                        " VALUES (:order, 10.00, 'succeeded', now() AT TIME ZONE 'UTC')"
                        " RETURNING id"
                    ),
                    {"order": order_id},
                ).scalar_one()
                known = payments[label] = (order_id, payment_id)
            order_id, payment_id = known
            subject = str(order_id)
            event_id = str(uuid.uuid4())
            body = json.dumps({"id": event_id, "type": event_type, "subject": subject})
            position = connection.execute(
                text(
                    "INSERT INTO outbox_events (event_id, type, subject, payment_id, body,"
                    " created_at, next_attempt_at) VALUES (:id, :type, :subject, :payment,"
                    " :body, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')"
                    " RETURNING position"
                ),
                {
                    "id": event_id,
                    "type": event_type,
                    "subject": subject,
                    "payment": payment_id,
                    "body": body,
                },
            ).scalar_one()
            written.append(Written(position, subject))
    return written


def outbox_rows(engine: Engine) -> dict[int, OutboxRow]:
    """Every row of the outbox, by position."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT position, event_id::text, subject, status, attempts, delivered_to,"
                " last_error, next_attempt_at, claimed_until, delivered_at"
                " FROM outbox_events ORDER BY position"
            )
        )
        return {row.position: OutboxRow(*row) for row in rows}


def set_columns(engine: Engine, positions: Sequence[int], assignments: str) -> None:
    """``UPDATE outbox_events SET <assignments>`` on ``positions``: for states a test needs
    without waiting for them (an old delivery, a dead event)."""
    with engine.begin() as connection:
        connection.execute(
            text(f"UPDATE outbox_events SET {assignments} WHERE position = ANY(:positions)"),
            {"positions": list(positions)},
        )
