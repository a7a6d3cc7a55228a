"""The relay: takes the outbox's events to every destination, at least once, in order per
subject.

A relay claims a batch of due events with a lease (several relays at once never claim the
same event while a lease runs), hands each event to every destination that has not taken it
yet, and records the outcome: delivered, to be tried again after a back-off, or dead after too
many failures. A relay that dies mid-batch loses nothing: its leases run out and another relay
claims the events again, so an event may arrive twice, always with the same id.

Per subject (an order) the events are delivered in the order they were written: the outbox
lets a relay claim only the first pending event of a subject, and within a batch the events of
one subject are delivered one after the other, a failure stopping the later ones.

This module is pure: the outbox and the destinations are ports, time is the event loop's.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Protocol

from payment.domain.delivery import Backoff, DeliveryFailed, Destination, OutboxEvent
from payment.domain.errors import StorageUnavailable

MAX_ERROR_LENGTH = 500
"""An outcome's error is cut to this many characters: it is a hint, not a log."""


class EventStatus(StrEnum):
    PENDING = "pending"
    """To be delivered (again) once due."""
    DELIVERED = "delivered"
    """Every destination has taken it."""
    DEAD = "dead"
    """Given up on after too many failures; an operator re-queues it."""


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What became of a claimed event, as the outbox records it."""

    position: int
    status: EventStatus
    delivered_to: frozenset[str]
    """Every destination that has taken it, before this claim or during it."""
    attempts: int
    """Failed deliveries so far, this one included."""
    last_error: str | None = None
    retry_in: timedelta | None = None
    """For a pending event: how long until it is tried again."""


class Outbox(Protocol):
    """The events waiting to be delivered, shared by every relay."""

    async def claim(self, limit: int, lease: timedelta) -> Sequence[OutboxEvent]:
        """Up to ``limit`` due events, oldest first, each the first pending event of its
        subject and claimed by no one else, leased to this relay for ``lease``. Raises
        ``StorageUnavailable``."""
        ...

    async def record(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        """Record the outcomes and end their leases. An event that is no longer pending (a
        relay whose lease ran out came second) is left as it is. Raises
        ``StorageUnavailable``; then nothing was recorded, or all of it."""
        ...

    async def release(self, events: Sequence[OutboxEvent]) -> None:
        """End the leases of events this relay claimed and did not try, so that they are
        claimed again at once. Raises ``StorageUnavailable``."""
        ...


class RelayObserver(Protocol):
    """What the relay tells the outside: log lines and metrics. Never raises."""

    def delivered(self, event: OutboxEvent, destination: str) -> None: ...

    def failed(self, event: OutboxEvent, destination: str, error: str, attempts: int) -> None: ...

    def dead(self, event: OutboxEvent, attempts: int, error: str) -> None: ...

    def store_unavailable(self, error: StorageUnavailable, retry_in: float) -> None: ...

    def store_back(self) -> None: ...


class QuietObserver:
    """Tells nobody."""

    def delivered(self, event: OutboxEvent, destination: str) -> None:
        pass

    def failed(self, event: OutboxEvent, destination: str, error: str, attempts: int) -> None:
        pass

    def dead(self, event: OutboxEvent, attempts: int, error: str) -> None:
        pass

    def store_unavailable(self, error: StorageUnavailable, retry_in: float) -> None:
        pass

    def store_back(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    """How a relay goes about its work."""

    batch_size: int = 100
    lease: timedelta = timedelta(seconds=60)
    max_attempts: int = 25
    backoff: Backoff = field(default_factory=Backoff)
    poll_interval: timedelta = timedelta(milliseconds=500)
    """The wait after a claim that found nothing."""
    concurrency: int = 16
    """Subjects delivered at once within a batch: fewer than the connections an HTTP client
    keeps alive (20 for the webhooks'), so that batch after batch reuses them."""
    store_retry_cap: timedelta = timedelta(seconds=10)
    """The longest wait before asking an unavailable outbox again."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_attempts < 1 or self.concurrency < 1:
            raise ValueError("batch size, attempts and concurrency count from 1")
        if self.lease <= timedelta(0) or self.poll_interval <= timedelta(0):
            raise ValueError("the lease and the poll interval must be positive")

    @property
    def delivery_timeout(self) -> float:
        """The longest one destination may take with one event: half the lease, so that a
        hanging destination cannot make the lease run out under the relay's feet. The
        destinations' own timeouts are meant to come first."""
        return self.lease.total_seconds() / 2


class Relay:
    """Delivers the outbox's events to ``destinations``; ``run`` until told to stop."""

    def __init__(
        self,
        outbox: Outbox,
        destinations: Sequence[Destination],
        policy: RelayPolicy | None = None,
        *,
        observer: RelayObserver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not destinations:
            raise ValueError("a relay needs at least one destination")
        names = [destination.name for destination in destinations]
        if len(set(names)) != len(names):
            raise ValueError("two destinations have the same name")
        self._outbox = outbox
        self._destinations = tuple(destinations)
        self.policy = policy or RelayPolicy()
        self._observer: RelayObserver = observer or QuietObserver()
        self._rng = rng
        self._unrecorded: list[DeliveryOutcome] = []
        """Outcomes of deliveries made whose record has not reached the outbox yet."""

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver batch after batch until ``stopping`` is set: then finish the deliveries
        under way, give back the leases of the events not tried, and return. While the outbox
        is unavailable, wait (longer each time, up to a cap) and ask again: never give up."""
        failures = 0
        while not stopping.is_set():
            try:
                claimed = await self.deliver_batch(stopping)
            except StorageUnavailable as error:
                failures += 1
                pause = self._store_pause(failures)
                self._observer.store_unavailable(error, pause)
                await _wait(stopping, pause)
                continue
            if failures:
                failures = 0
                self._observer.store_back()
            if not claimed:
                await _wait(stopping, self.policy.poll_interval.total_seconds())
        with suppress(StorageUnavailable):
            await self._record_outstanding()

    async def deliver_batch(self, stopping: asyncio.Event | None = None) -> int:
        """Claim one batch and deliver it; how many events were claimed. Once ``stopping``
        is set, no further event is started; those not started get their leases back."""
        await self._record_outstanding()
        policy = self.policy
        events = await self._outbox.claim(policy.batch_size, policy.lease)
        if not events:
            return 0
        lease_ends = time.monotonic() + policy.lease.total_seconds() * 0.9
        untried: list[OutboxEvent] = []
        slots = asyncio.Semaphore(policy.concurrency)

        async def deliver_subject(queue: list[OutboxEvent]) -> None:
            async with slots:
                for index, event in enumerate(queue):
                    late = time.monotonic() >= lease_ends  # another relay may have it now
                    if late or (stopping is not None and stopping.is_set()):
                        untried.extend(queue[index:])
                        return
                    outcome = await self.deliver(event)
                    self._unrecorded.append(outcome)
                    if outcome.status is not EventStatus.DELIVERED:
                        untried.extend(queue[index + 1 :])
                        return

        async with asyncio.TaskGroup() as deliveries:
            for queue in _by_subject(events):
                deliveries.create_task(deliver_subject(queue))
        await self._record_outstanding()
        if untried:
            await self._outbox.release(untried)
        return len(events)

    async def deliver(self, event: OutboxEvent) -> DeliveryOutcome:
        """Hand ``event`` to every destination that has not taken it (at once), and say what
        became of it. Never raises for a destination's failure."""
        targets = [d for d in self._destinations if d.name not in event.delivered_to]
        errors = await asyncio.gather(*(self._try(d, event) for d in targets))
        accepted = set(event.delivered_to)
        failures: list[tuple[str, str]] = []
        for destination, error in zip(targets, errors, strict=True):
            if error is None:
                accepted.add(destination.name)
                self._observer.delivered(event, destination.name)
            else:
                failures.append((destination.name, error))
        if not failures:
            return DeliveryOutcome(
                event.position, EventStatus.DELIVERED, frozenset(accepted), event.attempts
            )
        attempts = event.attempts + 1
        for name, error in failures:
            self._observer.failed(event, name, error, attempts)
        summary = "; ".join(f"{name}: {error}" for name, error in failures)[:MAX_ERROR_LENGTH]
        if attempts >= self.policy.max_attempts:
            self._observer.dead(event, attempts, summary)
            return DeliveryOutcome(
                event.position, EventStatus.DEAD, frozenset(accepted), attempts, summary
            )
        return DeliveryOutcome(
            event.position,
            EventStatus.PENDING,
            frozenset(accepted),
            attempts,
            summary,
            retry_in=self.policy.backoff.delay(attempts, rng=self._rng),
        )

    async def _try(self, destination: Destination, event: OutboxEvent) -> str | None:
        """None when ``destination`` took ``event``; else why not, in a few words."""
        timeout = self.policy.delivery_timeout
        try:
            async with asyncio.timeout(timeout):
                await destination.deliver(event)
        except DeliveryFailed as error:
            return str(error) or "refused"
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except Exception as error:  # a defect of the destination must not stop the relay
            # The message could hold anything (an address with its password): the class only.
            return f"unexpected {type(error).__name__}"
        return None

    async def _record_outstanding(self) -> None:
        if not self._unrecorded:
            return
        outcomes = list(self._unrecorded)
        await self._outbox.record(outcomes)
        del self._unrecorded[: len(outcomes)]

    def _store_pause(self, failures: int) -> float:
        first = self.policy.poll_interval.total_seconds()
        cap = max(first, self.policy.store_retry_cap.total_seconds())
        return float(min(cap, first * 2 ** min(failures - 1, 32)))


def _by_subject(events: Sequence[OutboxEvent]) -> list[list[OutboxEvent]]:
    """The events grouped by subject, each group in position order."""
    groups: dict[str, list[OutboxEvent]] = {}
    for event in sorted(events, key=lambda e: e.position):
        groups.setdefault(event.subject, []).append(event)
    return list(groups.values())


async def _wait(stopping: asyncio.Event, seconds: float) -> None:
    """``seconds``, or less if ``stopping`` is set meanwhile."""
    with suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stopping.wait()
