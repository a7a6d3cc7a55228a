"""Telling the rest of the shop: the events the outbox holds, where they go, and when a
failed delivery is tried again.

An event is written to the outbox in the same transaction as what it tells (a payment), and
delivered afterwards, at least once, to every destination: a relay claims a batch, hands each
event to the destinations that have not taken it yet, and records what happened. Consumers
deduplicate by the event's id.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An event as the relay sees it."""

    position: int
    """Where it stands in the outbox: the order events were written in."""
    event_id: str
    """The CloudEvents id: the same on every delivery, the consumers' deduplication key."""
    type: str
    subject: str
    """The order the event is about: events of one subject are delivered in order."""
    body: str
    """The CloudEvent in structured JSON, exactly as delivered."""
    created_at: datetime
    attempts: int = 0
    """Deliveries tried before this one."""
    delivered_to: frozenset[str] = frozenset()
    """The destinations that have taken it already."""


class DeliveryFailed(Exception):
    """A destination did not take the event. The message is short and carries no secret."""


class Destination(Protocol):
    """Somewhere events are delivered: a webhook subscriber, a message broker."""

    name: str
    """How the destination is named in the outbox, the metrics and the logs (no secrets)."""

    async def deliver(self, event: OutboxEvent) -> None:
        """Hand the event over; return once the destination has taken it.
        Raises ``DeliveryFailed``."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long a failed event waits before it is tried again: exponential, capped, with full
    jitter so that many events failing together do not come back together."""

    base: timedelta = timedelta(seconds=1)
    cap: timedelta = timedelta(hours=1)

    def delay(self, attempts: int, *, rng: random.Random | None = None) -> timedelta:
        """The wait after ``attempts`` failed deliveries (1 for the first failure)."""
        if attempts < 1:
            raise ValueError("attempts counts failed deliveries, from 1")
        growth = 2.0 ** min(attempts - 1, 64)  # past 2**64 every useful cap is reached
        ceiling = min(self.cap.total_seconds(), self.base.total_seconds() * growth)
        draw = (rng or random).random()
        return timedelta(seconds=ceiling * draw)
