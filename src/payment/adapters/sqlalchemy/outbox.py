"""The outbox as the relays and the operators see it: claims with leases, outcomes, the
dead letters, the purge, and the figures for the metrics.

Every statement is one round trip in autocommit (a single statement is atomic by itself):
a claim's lease is committed at once, so no transaction stays open while events are
delivered. Several relays claim at once safely: ``FOR UPDATE SKIP LOCKED`` makes each pass
over the rows another is claiming, and the lease keeps the claimed ones theirs until it runs
out. Every time is the database's (``now() AT TIME ZONE 'UTC'``, the naive UTC the tables hold), so
the relays' clocks never have to agree.

Each statement has a bound (``timeout``): past it, its connection is cut (``engine.cut_off``)
and the call fails with ``StorageUnavailable``, so a frozen database or a silent link never
holds the relay, and a database restarted under it costs a few failed calls, no more.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg import AsyncConnection
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from payment.adapters.logging import error_summary
from payment.adapters.sqlalchemy.engine import SETTLE_TRANSACTION, SessionSettings, cut_off
from payment.domain.delivery import OutboxEvent
from payment.domain.errors import StorageUnavailable
from payment.domain.relay import DeliveryOutcome, EventStatus

Row = tuple[Any, ...]
T = TypeVar("T")

_UNAVAILABLE = (
    psycopg.OperationalError,  # connection lost or refused, statement timeout
    psycopg.InterfaceError,
    psycopg.errors.ReadOnlySqlTransaction,  # a standby, during a failover
    sa_exc.OperationalError,  # raised by the pool when a new connection fails
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # no connection free in the pool in time
    OSError,
)

CLAIM = """
WITH due AS (
    SELECT e.position
    FROM outbox_events e
    WHERE e.status = 'pending'
      AND e.next_attempt_at <= (now() AT TIME ZONE 'UTC')
      AND (e.claimed_until IS NULL OR e.claimed_until < (now() AT TIME ZONE 'UTC'))
      AND NOT EXISTS (
          SELECT 1 FROM outbox_events earlier
          WHERE earlier.subject = e.subject
            AND earlier.status = 'pending'
            AND earlier.position < e.position)
    ORDER BY e.position
    LIMIT %(limit)s
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE outbox_events o
SET claimed_until = (now() AT TIME ZONE 'UTC') + make_interval(secs => %(lease)s)
FROM due
WHERE o.position = due.position
RETURNING o.position, o.event_id::text, o.type, o.subject, o.body, o.created_at, o.attempts,
          o.delivered_to, o.claimed_until
"""
"""Only the first pending event of a subject may be claimed, whoever holds it and whether it
is due or not: the later ones wait, so a subject's events go out in order. A dead event does
not hold its subject back."""

RECORD = """
UPDATE outbox_events o
SET status = r.status,
    attempts = greatest(o.attempts, r.attempts),
    delivered_to = ARRAY(
        SELECT DISTINCT name FROM unnest(o.delivered_to || r.delivered_to) AS name ORDER BY name),
    last_error = coalesce(r.last_error, o.last_error),
    delivered_at = CASE
        WHEN r.status = 'delivered' THEN (now() AT TIME ZONE 'UTC')
        ELSE o.delivered_at END,
    next_attempt_at = CASE
        WHEN r.status = 'pending'
        THEN (now() AT TIME ZONE 'UTC') + make_interval(secs => r.retry_in)
        ELSE o.next_attempt_at END,
    claimed_until = NULL
FROM jsonb_to_recordset(%(outcomes)s::jsonb)
    AS r(position bigint, status text, attempts integer, delivered_to text[],
         last_error text, retry_in double precision)
WHERE o.position = r.position AND o.status = 'pending'
"""
"""Every outcome of a batch in one statement. What another relay recorded first stands: the
destinations that took the event add up, and an event no longer pending is left alone."""

RELEASE = """
UPDATE outbox_events o
SET claimed_until = NULL
FROM unnest(%(positions)s::bigint[], %(leases)s::timestamp[]) AS mine(position, lease)
WHERE o.position = mine.position AND o.claimed_until = mine.lease AND o.status = 'pending'
"""
"""Only leases still this relay's own: one that ran out may be another relay's by now."""

STATS = """
SELECT
    (SELECT count(*) FROM outbox_events WHERE status = 'pending'),
    (SELECT created_at FROM outbox_events WHERE status = 'pending' ORDER BY position LIMIT 1),
    (SELECT count(*) FROM outbox_events WHERE status = 'dead'),
    (now() AT TIME ZONE 'UTC')
"""

PURGE = """
DELETE FROM outbox_events
WHERE position IN (
    SELECT position FROM outbox_events
    WHERE status = 'delivered'
      AND delivered_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => %(retention)s)
    ORDER BY delivered_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
"""

DEAD = """
SELECT position, event_id::text, type, subject, created_at, attempts, last_error, delivered_to
FROM outbox_events
WHERE status = 'dead'
ORDER BY position
LIMIT %(limit)s
"""

REQUEUE = """
UPDATE outbox_events
SET status = 'pending', attempts = 0, next_attempt_at = (now() AT TIME ZONE 'UTC'),
    claimed_until = NULL
WHERE status = 'dead' AND (%(every)s OR event_id = ANY(%(ids)s::uuid[]))
RETURNING event_id::text
"""

READY = "SELECT 1"

DEFAULT_TIMEOUT_SECONDS = 10.0
PURGE_BATCH = 5_000


class OutboxMissing(StorageUnavailable):
    """The database answers but has no outbox table: it has not been migrated yet."""

    def __init__(self) -> None:
        super().__init__("the database lacks the outbox; run `payment-service migrate`")


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    oldest_pending_age: timedelta | None
    """How long the oldest pending event has waited; None when none waits."""
    dead: int


@dataclass(frozen=True, slots=True)
class DeadEvent:
    position: int
    event_id: str
    type: str
    subject: str
    created_at: datetime
    attempts: int
    last_error: str | None
    delivered_to: frozenset[str]


class SqlOutboxStore:
    """The outbox on PostgreSQL, through ``engine``'s pool (autocommit connections, as
    ``build_async_engine`` makes them). Implements ``payment.domain.relay.Outbox``."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        session: SessionSettings | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.engine = engine
        self._settle = session.values if session is not None and session.per_transaction else None
        self.timeout = timeout
        self._leases: dict[int, datetime] = {}
        """The lease this relay holds on each event it claimed and has not given back."""

    async def claim(self, limit: int, lease: timedelta) -> list[OutboxEvent]:
        rows = await self._run(CLAIM, {"limit": limit, "lease": lease.total_seconds()})
        events = []
        for row in sorted(rows, key=lambda r: int(r[0])):
            position, event_id, type_, subject, body, created_at, attempts, delivered_to, until = (
                row
            )
            self._leases[position] = until
            events.append(
                OutboxEvent(
                    position=position,
                    event_id=event_id,
                    type=type_,
                    subject=subject,
                    body=body,
                    created_at=created_at.replace(tzinfo=UTC),
                    attempts=attempts,
                    delivered_to=frozenset(delivered_to),
                )
            )
        return events

    async def record(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        if not outcomes:
            return
        document = json.dumps([_outcome_json(outcome) for outcome in outcomes])
        await self._run(RECORD, {"outcomes": document})
        for outcome in outcomes:
            self._leases.pop(outcome.position, None)

    async def release(self, events: Sequence[OutboxEvent]) -> None:
        held = [
            (e.position, self._leases[e.position]) for e in events if e.position in self._leases
        ]
        if not held:
            return
        await self._run(
            RELEASE,
            {"positions": [p for p, _ in held], "leases": [lease for _, lease in held]},
        )
        for position, _ in held:
            self._leases.pop(position, None)

    async def stats(self) -> OutboxStats:
        [(pending, oldest, dead, now)] = await self._run(STATS, {})
        age = None if oldest is None else max(timedelta(0), now - oldest)
        return OutboxStats(pending=pending, oldest_pending_age=age, dead=dead)

    async def purge_delivered(self, retention: timedelta, *, batch: int = PURGE_BATCH) -> int:
        """Delete the events delivered longer than ``retention`` ago, in short statements of at
        most ``batch`` rows; how many."""
        seconds = retention.total_seconds()
        purged = 0
        while True:
            deleted = await self._count(PURGE, {"retention": seconds, "limit": batch})
            purged += deleted
            if deleted < batch:
                return purged

    async def dead(self, limit: int = 1000) -> list[DeadEvent]:
        """The dead-lettered events, oldest first, at most ``limit``."""
        rows = await self._run(DEAD, {"limit": limit})
        return [
            DeadEvent(
                position=position,
                event_id=event_id,
                type=type_,
                subject=subject,
                created_at=created_at.replace(tzinfo=UTC),
                attempts=attempts,
                last_error=last_error,
                delivered_to=frozenset(delivered_to),
            )
            for (
                position,
                event_id,
                type_,
                subject,
                created_at,
                attempts,
                last_error,
                delivered_to,
            ) in rows
        ]

    async def requeue(self, event_ids: Sequence[str] | None) -> list[str]:
        """Make dead events pending again, due now, with no failure counted; every dead event
        when ``event_ids`` is None. The ids of those re-queued (an id that is not a dead
        event's is left out). ``ValueError`` for an id that is not a UUID, nothing changed."""
        ids = [] if event_ids is None else [str(uuid.UUID(i)) for i in event_ids]
        rows = await self._run(REQUEUE, {"every": event_ids is None, "ids": ids})
        return [row[0] for row in rows]

    async def ready(self) -> bool:
        """Whether the database answers a statement now."""
        try:
            await self._run(READY, {})
        except StorageUnavailable:
            return False
        return True

    async def _count(self, statement: str, params: dict[str, Any]) -> int:
        return await self._on_connection(lambda c: _rowcount(c, statement, params, self._settle))

    async def _run(self, statement: str, params: dict[str, Any]) -> list[Row]:
        return await self._on_connection(lambda c: _rows(c, statement, params, self._settle))

    async def _on_connection(self, work: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """``work`` on a pooled connection, bounded by ``timeout``; ``StorageUnavailable`` when
        the database cannot be reached or does not answer in time."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):  # the wait for a connection
                connection = await self.engine.connect()
        except TimeoutError:
            raise StorageUnavailable(f"no connection within {self.timeout:g} s") from None
        except _UNAVAILABLE as error:
            raise StorageUnavailable(error_summary(error)) from error
        try:
            raw = await connection.get_raw_connection()
            driver: AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
            timer = loop.call_later(self.timeout, cut_off, driver)
            try:
                return await work(driver)
            except psycopg.errors.UndefinedTable:
                raise OutboxMissing() from None
            except _UNAVAILABLE as error:
                if timer.when() <= loop.time():
                    raise StorageUnavailable(f"no answer within {self.timeout:g} s") from error
                raise StorageUnavailable(error_summary(error)) from error
            finally:
                timer.cancel()
                if driver.broken or driver.closed:
                    await connection.invalidate()
        except _UNAVAILABLE as error:  # while invalidating or getting the raw connection
            raise StorageUnavailable(error_summary(error)) from error
        finally:
            with suppress(*_UNAVAILABLE):
                await connection.close()


async def _rows(
    connection: AsyncConnection[Any],
    statement: str,
    params: dict[str, Any],
    settle: dict[str, str] | None,
) -> list[Row]:
    if settle is None:
        cursor = await connection.execute(statement, params)
        return await cursor.fetchall() if cursor.description else []
    async with connection.transaction():  # behind a pooler: the settings go with it
        await connection.execute(SETTLE_TRANSACTION, settle)
        cursor = await connection.execute(statement, params)
        return await cursor.fetchall() if cursor.description else []


async def _rowcount(
    connection: AsyncConnection[Any],
    statement: str,
    params: dict[str, Any],
    settle: dict[str, str] | None,
) -> int:
    if settle is None:
        cursor = await connection.execute(statement, params)
        return cursor.rowcount
    async with connection.transaction():
        await connection.execute(SETTLE_TRANSACTION, settle)
        cursor = await connection.execute(statement, params)
        return cursor.rowcount


def _outcome_json(outcome: DeliveryOutcome) -> dict[str, Any]:
    retry_in = outcome.retry_in.total_seconds() if outcome.retry_in is not None else 0.0
    if outcome.status is not EventStatus.PENDING:
        retry_in = 0.0
    return {
        "position": outcome.position,
        "status": outcome.status.value,
        "attempts": outcome.attempts,
        "delivered_to": sorted(outcome.delivered_to),
        "last_error": outcome.last_error,
        "retry_in": retry_in,
    }
