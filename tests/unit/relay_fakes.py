"""An outbox and destinations in memory, with the semantics of the real ones, for the relay's
unit tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from payment.domain.delivery import DeliveryFailed, OutboxEvent
from payment.domain.errors import StorageUnavailable
from payment.domain.relay import DeliveryOutcome, EventStatus

CREATED_AT = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


@dataclass
class StoredEvent:
    event: OutboxEvent
    status: EventStatus = EventStatus.PENDING
    due_at: float = 0.0
    """``time.monotonic()`` from which it may be claimed."""
    leased_until: float | None = None
    last_error: str | None = None
    retry_in: timedelta | None = None


class FakeOutbox:
    """The outbox's claim rules in memory: due, not leased, the first pending event of its
    subject. ``unavailable`` calls fail with ``StorageUnavailable`` before any change."""

    def __init__(self, *, whole_orders: bool = False) -> None:
        self.whole_orders = whole_orders
        """Hand out the due events of a subject together (in order) rather than the first."""
        self.events: dict[int, StoredEvent] = {}
        self.unavailable = 0
        """How many of the next calls fail."""
        self.claims = 0
        self.released: list[int] = []
        self.recorded: list[DeliveryOutcome] = []

    def add(self, *subjects: str) -> list[OutboxEvent]:
        added = []
        for subject in subjects:
            position = len(self.events) + 1
            event = OutboxEvent(
                position=position,
                event_id=f"00000000-0000-4000-8000-{position:012d}",
                type="payment.succeeded",
                subject=subject,
                body=f'{{"subject": "{subject}", "position": {position}}}',
                created_at=CREATED_AT,
            )
            self.events[position] = StoredEvent(event)
            added.append(event)
        return added

    def status(self, position: int) -> EventStatus:
        return self.events[position].status

    def _call(self) -> None:
        if self.unavailable:
            self.unavailable -= 1
            raise StorageUnavailable("the database is away")

    async def claim(self, limit: int, lease: timedelta) -> list[OutboxEvent]:
        self._call()
        self.claims += 1
        now = time.monotonic()
        blocked: set[str] = set()
        claimed: list[OutboxEvent] = []
        for position in sorted(self.events):
            stored = self.events[position]
            if stored.status is not EventStatus.PENDING:
                continue
            subject = stored.event.subject
            leased = stored.leased_until is not None and stored.leased_until > now
            claimable = stored.due_at <= now and not leased and len(claimed) < limit
            if subject not in blocked and claimable:
                stored.leased_until = now + lease.total_seconds()
                claimed.append(stored.event)
                if self.whole_orders:
                    continue
            blocked.add(subject)
        return claimed

    async def record(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        self._call()
        for outcome in outcomes:
            self.recorded.append(outcome)
            stored = self.events[outcome.position]
            if stored.status is not EventStatus.PENDING:
                continue
            event = stored.event
            stored.event = replace(
                event,
                attempts=max(event.attempts, outcome.attempts),
                delivered_to=event.delivered_to | outcome.delivered_to,
            )
            stored.status = outcome.status
            stored.leased_until = None
            stored.last_error = outcome.last_error or stored.last_error
            stored.retry_in = outcome.retry_in
            if outcome.retry_in is not None:
                stored.due_at = time.monotonic() + outcome.retry_in.total_seconds()

    async def release(self, events: Sequence[OutboxEvent]) -> None:
        self._call()
        for event in events:
            self.released.append(event.position)
            self.events[event.position].leased_until = None


@dataclass
class FakeDestination:
    """Takes events, or refuses them (``failures`` more times, or while ``down``), or hangs
    until ``release`` is set. ``taken`` lists the events in the order it took them."""

    name: str
    failures: int = 0
    down: bool = False
    hang: asyncio.Event | None = None
    error: Exception | None = None
    """Raised instead of ``DeliveryFailed`` when set (a defect of the destination)."""
    taken: list[OutboxEvent] = field(default_factory=list)
    started: list[OutboxEvent] = field(default_factory=list)
    closed: bool = False

    async def deliver(self, event: OutboxEvent) -> None:
        self.started.append(event)
        if self.hang is not None:
            await self.hang.wait()
        if self.error is not None:
            raise self.error
        if self.down:
            raise DeliveryFailed("connection refused")
        if self.failures:
            self.failures -= 1
            raise DeliveryFailed("status 500")
        self.taken.append(event)

    async def close(self) -> None:
        self.closed = True

    def subjects(self) -> list[str]:
        return [event.subject for event in self.taken]


@dataclass
class RecordingObserver:
    lines: list[tuple[object, ...]] = field(default_factory=list)

    def delivered(self, event: OutboxEvent, destination: str) -> None:
        self.lines.append(("delivered", event.position, destination))

    def failed(self, event: OutboxEvent, destination: str, error: str, attempts: int) -> None:
        self.lines.append(("failed", event.position, destination, error, attempts))

    def dead(self, event: OutboxEvent, attempts: int, error: str) -> None:
        self.lines.append(("dead", event.position, attempts, error))

    def store_unavailable(self, error: StorageUnavailable, retry_in: float) -> None:
        self.lines.append(("unavailable", retry_in))

    def store_back(self) -> None:
        self.lines.append(("back",))

    def of(self, kind: str) -> list[tuple[object, ...]]:
        return [line for line in self.lines if line[0] == kind]
