"""/readyz's check on a real PostgreSQL: on a connection of its own, never a slot of the
requests' pool; bounded by its timeout when the path goes silent; one check at a time however
many probes ask; back to ready by itself when the path speaks again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from payment.adapters.sqlalchemy.engine import build_async_engine, direct_connector
from payment.adapters.sqlalchemy.readiness import ReadinessCheck
from tests.integration.conftest import service_settings
from tests.support.silent_link import SilenceableLink

pytestmark = pytest.mark.anyio

TIMEOUT = 0.3
SLACK = 0.5


@asynccontextmanager
async def check_on(url: URL, *, kept_for: float = 0) -> AsyncIterator[Checked]:
    """A readiness check of the database at ``url`` as the service makes it, beside the
    requests' engine with a pool of one."""
    settings = service_settings(url, payment_db_pool_size=1)
    engine = build_async_engine(settings)
    check = ReadinessCheck(direct_connector(engine, settings), timeout=TIMEOUT, kept_for=kept_for)
    try:
        yield Checked(check, engine)
    finally:
        await check.close()
        await engine.dispose()


@dataclass(frozen=True)
class Checked:
    check: ReadinessCheck
    engine: AsyncEngine


async def test_ready_while_every_connection_of_the_pool_is_taken(clean_database: Engine) -> None:
    async with check_on(clean_database.url) as checked, checked.engine.connect():
        # The pool's only connection is taken.
        started = time.monotonic()
        ready = await checked.check.ready()
        took = time.monotonic() - started

    assert ready is True
    assert took < TIMEOUT + SLACK


async def test_not_ready_within_the_timeout_on_a_silent_link_and_ready_again_after_it(
    clean_database: Engine,
) -> None:
    with SilenceableLink.to(clean_database.url) as link:
        async with check_on(link.url_through(clean_database.url)) as checked:
            check = checked.check
            before = await check.ready()
            link.silence()
            timings = []
            answers = []
            for _ in range(2):  # on its connection, then on a new one that never answers
                started = time.monotonic()
                answers.append(await check.ready())
                timings.append(time.monotonic() - started)
            link.restore()
            after = await check.ready()

    assert before is True
    assert answers == [False, False]
    assert all(took < TIMEOUT + SLACK for took in timings), timings
    assert after is True


async def test_probes_at_once_share_one_check(clean_database: Engine) -> None:
    with SilenceableLink.to(clean_database.url) as link:
        async with check_on(link.url_through(clean_database.url), kept_for=1.0) as checked:
            link.silence()
            started = time.monotonic()
            answers = await asyncio.gather(*(checked.check.ready() for _ in range(20)))
            took = time.monotonic() - started
        opened = link.opened

    assert answers == [False] * 20
    assert took < TIMEOUT + SLACK, took  # one check's time, not twenty
    assert opened == 1


async def test_ready_at_once_after_the_server_ended_the_checks_connection(
    clean_database: Engine,
) -> None:
    async with check_on(clean_database.url) as checked:
        before = await checked.check.ready()
        with clean_database.connect() as admin:
            ended = admin.execute(
                text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))"
                    " FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = 'payment-service'"
                )
            ).scalar_one()
        after = await checked.check.ready()

    # Sessions of the service left by other tests on this database may be ended with it.
    assert (before, ended >= 1, after) == (True, True, True)
