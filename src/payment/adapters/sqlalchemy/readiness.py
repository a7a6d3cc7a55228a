"""Whether the database answers, for /readyz: bounded, outside the requests' pool, one check
at a time (SPEC §3.6).

The check keeps one connection of its own and runs ``SELECT 1`` on it, within the ready
timeout: it never waits for a slot of the requests' pool, so a pool held by slow payments (a
locked order, a freeze) does not make it wait or fail, and once made its connection is not
refused when the server reaches ``max_connections``; found dead (a restart, terminated
sessions), it is replaced within the same check. When it cannot open that connection
although the server answered (e.g. no connection slot left) while the requests' own
connections keep getting answers, the database is taken as ready: the pool is what serves.

A check under way is shared: any number of probes asking at once cost one check. No answer
is kept beyond it by default, so /readyz turns 503 as soon as the database stops answering.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import Any

import psycopg
import psycopg.errors
from psycopg import AsyncConnection

from payment.adapters.sqlalchemy.engine import Connector, PoolWatch, cut_off

ANSWER_KEPT_SECONDS = 0.0
"""How long an answer stands before the database is asked again: none beyond the check."""
_NO_SLOT_LEFT = ("too many clients", "remaining connection slots are reserved")
"""What PostgreSQL says when it answers but has no connection slot for one more session."""
POOL_EVIDENCE_SECONDS = 5.0
"""How recent the requests' last answered statement must be to stand in for the check."""
READY_STATEMENT = "SELECT 1"


class ReadinessCheck:
    """``await ready()``: True when the database answers now, within ``timeout`` seconds."""

    def __init__(
        self,
        connect: Connector,
        *,
        timeout: float,
        pool_watch: PoolWatch | None = None,
        kept_for: float = ANSWER_KEPT_SECONDS,
    ) -> None:
        self._connect = connect
        self.timeout = timeout
        self._pool_watch = pool_watch
        self._kept_for = kept_for
        self._connection: AsyncConnection[Any] | None = None
        self._running: asyncio.Future[bool] | None = None
        self._answer = False
        self._answered_at: float | None = None

    async def ready(self) -> bool:
        if self._fresh():
            return self._answer
        if self._running is None:  # a check under way is shared, not run twice
            self._running = asyncio.ensure_future(self._check_and_keep())
        # A probe that gives up does not cancel the check the others wait for.
        return await asyncio.shield(self._running)

    async def _check_and_keep(self) -> bool:
        try:
            self._answer = await self._check()
            self._answered_at = time.monotonic()
            return self._answer
        finally:
            self._running = None

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with suppress(psycopg.Error, OSError):
                await connection.close()  # no round trip: a goodbye sent, the socket closed

    def _fresh(self) -> bool:
        answered = self._answered_at
        return answered is not None and time.monotonic() - answered < self._kept_for

    async def _check(self) -> bool:
        deadline = time.monotonic() + self.timeout
        while True:
            connection = self._connection
            new = connection is None or connection.closed or connection.broken
            if connection is None or new:
                await self.close()
                try:
                    async with asyncio.timeout(deadline - time.monotonic()):  # safe to cancel
                        connection = self._connection = await self._connect()
                except (TimeoutError, psycopg.errors.ConnectionTimeout):
                    return False
                except (psycopg.Error, OSError) as error:
                    # Turned away with no slot left, the server answers: the pool may stand in.
                    # Refused or unreachable: the database does not answer.
                    return _no_slot_left(error) and self._pool_answers()
            left = deadline - time.monotonic()
            if left > 0 and await _answers_within(connection, left):
                return True
            await self.close()
            if new or time.monotonic() >= deadline:
                return False
            # The connection kept from an earlier check had died meanwhile (a restart,
            # sessions terminated): asked once more, on a new one.

    def _pool_answers(self) -> bool:
        watch = self._pool_watch
        return watch is not None and watch.answered_lately(POOL_EVIDENCE_SECONDS)


def _no_slot_left(error: BaseException) -> bool:
    message = str(error).lower()
    return any(words in message for words in _NO_SLOT_LEFT)


async def _answers_within(connection: AsyncConnection[Any], seconds: float) -> bool:
    """Whether ``connection`` answers a trivial statement within ``seconds``; past them its
    connection is cut (never a cancel request that would wait on the server)."""
    timer = asyncio.get_running_loop().call_later(seconds, cut_off, connection)
    try:
        await connection.execute(READY_STATEMENT)
    except (psycopg.Error, OSError):
        return False
    finally:
        timer.cancel()
    return True
