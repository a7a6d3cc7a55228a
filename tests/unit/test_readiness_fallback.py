"""When /readyz's check cannot open its own connection although the server answered (no
connection slot left, say), the requests' pool stands in for it: ready while the requests'
statements keep getting answers, not once one of them failed after the last answer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from payment.adapters.settings import Settings
from payment.adapters.sqlalchemy.engine import PoolWatch, build_async_engine
from payment.adapters.sqlalchemy.readiness import POOL_EVIDENCE_SECONDS, ReadinessCheck

pytestmark = pytest.mark.anyio


class TurnedAway:
    """A server that refuses every new session, and how often it was asked."""

    def __init__(self) -> None:
        self.asked = 0

    async def __call__(self) -> AsyncConnection[Any]:
        self.asked += 1
        raise psycopg.OperationalError("FATAL:  sorry, too many clients already")


@pytest.fixture
async def watch() -> PoolWatch:
    engine = build_async_engine(Settings())  # connects to nothing until asked
    return PoolWatch(engine)


async def test_ready_while_the_pool_keeps_getting_answers(watch: PoolWatch) -> None:
    watch.answered_at = time.monotonic()

    check = ReadinessCheck(TurnedAway(), timeout=0.5, pool_watch=watch, kept_for=0)

    assert await check.ready() is True


async def test_not_ready_when_a_request_failed_after_the_last_answer(watch: PoolWatch) -> None:
    watch.answered_at = time.monotonic() - 1
    watch.failed_at = time.monotonic()

    check = ReadinessCheck(TurnedAway(), timeout=0.5, pool_watch=watch, kept_for=0)

    assert await check.ready() is False


async def test_not_ready_when_the_last_answer_is_old(watch: PoolWatch) -> None:
    watch.answered_at = time.monotonic() - POOL_EVIDENCE_SECONDS - 1

    check = ReadinessCheck(TurnedAway(), timeout=0.5, pool_watch=watch, kept_for=0)

    assert await check.ready() is False


async def test_not_ready_without_a_pool_to_stand_in() -> None:
    check = ReadinessCheck(TurnedAway(), timeout=0.5, kept_for=0)

    assert await check.ready() is False


async def test_an_answer_is_kept_a_moment_and_not_asked_again(watch: PoolWatch) -> None:
    server = TurnedAway()
    check = ReadinessCheck(server, timeout=0.5, pool_watch=watch, kept_for=60)

    answers = [await check.ready() for _ in range(5)]

    assert answers == [False] * 5
    assert server.asked == 1


class Stopped:
    """A server that is not there: every connection refused."""

    async def __call__(self) -> AsyncConnection[Any]:
        raise psycopg.OperationalError(
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
            "Connection refused"
        )


async def test_not_ready_when_the_server_refuses_even_while_the_pool_answered_lately(
    watch: PoolWatch,
) -> None:
    watch.answered_at = time.monotonic()

    check = ReadinessCheck(Stopped(), timeout=0.5, pool_watch=watch, kept_for=0)

    assert await check.ready() is False


async def test_probes_asking_at_once_share_one_check(watch: PoolWatch) -> None:
    server = TurnedAway()
    check = ReadinessCheck(server, timeout=0.5, pool_watch=watch, kept_for=0)

    answers = await asyncio.gather(*(check.ready() for _ in range(8)))

    assert answers == [False] * 8
    assert server.asked == 1
