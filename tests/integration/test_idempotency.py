"""Idempotency keys on PostgreSQL: a key is stored only with its answer, by the write of the
decision it answers. No request waits for another with the same key, except while the
database settles which of two inserts of the key came first: a wait bounded by the lock
timeout, answered from the first insert when it commits, and paid when it rolls back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import anyio
import psycopg.errors
import pytest
from sqlalchemy import Connection, Engine, text

from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from payment.domain.attempts import Decision, Outcome, RecordedAnswer
from payment.domain.errors import StorageUnavailable
from payment.domain.services import Reply
from tests.integration.bounded import error_awaited_within
from tests.integration.conftest import ServiceEngine, service_engine_on
from tests.support.attempts import CALLER, attempt, pay, plain_answer
from tests.support.orders import add_orders, broken_invariants

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 26, 10, 15, 0, 123456, tzinfo=UTC)
KEY = "3a6c0f2e-key"
TOTAL = "60.00"
NO_HANG_SECONDS = 15
FIRST_ANSWER = RecordedAnswer(200, '{"outcome": "paid", "payment_id": 7}')


class FixedClock:
    def now(self) -> datetime:
        return NOW


CLOCK = FixedClock()


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("payments", "payment_attempts", "idempotency_keys")
        }


def lock_waits(engine: Engine) -> int:
    """How many sessions on this database wait for a lock right now."""
    with engine.connect() as connection:
        waiting: int = connection.execute(
            text(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE NOT l.granted AND a.datname = current_database()"
            )
        ).scalar_one()
        return waiting


async def until_lock_waits(engine: Engine, count: int) -> None:
    with anyio.fail_after(NO_HANG_SECONDS):
        while lock_waits(engine) != count:
            await anyio.sleep(0.01)


@contextmanager
def key_inserted_and_held(engine: Engine, order_id: int) -> Iterator[Connection]:
    """Another writer's transaction that inserted the key, for the same request, with its
    answer, and stays open until the block commits or rolls it back (rolled back if the
    block does neither). The service itself holds a key this way for one statement only."""
    with engine.connect() as connection:
        connection.execute(
            text(
                "INSERT INTO idempotency_keys (caller, key, fingerprint, answer_status,"
                " answer_body, created_at, expires_at)"
                " VALUES (:caller, :key, :fingerprint, :status, :body, now(), now())"
            ),
            {
                "caller": CALLER,
                "key": KEY,
                "fingerprint": attempt(order_id, TOTAL, key=KEY).fingerprint,
                "status": FIRST_ANSWER.status,
                "body": FIRST_ANSWER.body,
            },
        )
        yield connection
        connection.rollback()


@pytest.fixture
async def waiting_service(clean_database: Engine) -> AsyncIterator[ServiceEngine]:
    """The service's engine, with a lock timeout far longer than the tests' waits."""
    service = service_engine_on(clean_database.url, payment_db_lock_timeout_ms=10_000)
    yield service
    await service.engine.dispose()


@pytest.fixture
def order_id(clean_database: Engine) -> int:
    [order_id] = add_orders(clean_database, TOTAL)
    return order_id


async def test_a_key_held_by_an_open_transaction_is_waited_for_at_most_the_lock_timeout(
    clean_database: Engine, order_id: int
) -> None:
    service = service_engine_on(clean_database.url, payment_db_lock_timeout_ms=300)
    try:
        with key_inserted_and_held(clean_database, order_id):
            start = time.monotonic()
            error = await error_awaited_within(
                NO_HANG_SECONDS,
                lambda: pay(order_id, TOTAL, key=KEY, uow=service.unit_of_work(), clock=CLOCK),
            )
            took = time.monotonic() - start
    finally:
        await service.engine.dispose()

    assert isinstance(error, StorageUnavailable)
    assert isinstance(error.__cause__, psycopg.errors.LockNotAvailable)
    assert 0.25 <= took < 2, took
    # The other transaction rolled back: nothing is left, so the waiting request wrote nothing.
    assert counts(clean_database) == {"payments": 0, "payment_attempts": 0, "idempotency_keys": 0}
    assert broken_invariants(clean_database) == []


async def test_a_request_waiting_on_a_key_gets_the_first_answer_when_it_commits_within_the_wait(
    clean_database: Engine, waiting_service: ServiceEngine, order_id: int
) -> None:
    replies: list[Reply] = []

    async def retry() -> None:
        uow = waiting_service.unit_of_work()
        replies.append(await pay(order_id, TOTAL, key=KEY, uow=uow, clock=CLOCK))

    with key_inserted_and_held(clean_database, order_id) as first:
        async with anyio.create_task_group() as requests:
            requests.start_soon(retry)
            await until_lock_waits(clean_database, 1)
            assert replies == []
            first.commit()

    [replayed] = replies
    assert replayed.replayed
    assert replayed.answer == FIRST_ANSWER
    assert counts(clean_database) == {"payments": 0, "payment_attempts": 1, "idempotency_keys": 1}


async def test_a_request_waiting_on_a_key_pays_when_the_first_insert_rolls_back_within_the_wait(
    clean_database: Engine, waiting_service: ServiceEngine, order_id: int
) -> None:
    replies: list[Reply] = []

    async def retry() -> None:
        uow = waiting_service.unit_of_work()
        replies.append(await pay(order_id, TOTAL, key=KEY, uow=uow, clock=CLOCK))

    with key_inserted_and_held(clean_database, order_id) as first:
        async with anyio.create_task_group() as requests:
            requests.start_soon(retry)
            await until_lock_waits(clean_database, 1)
            assert replies == []
            first.rollback()

    [reply] = replies
    assert reply.outcome is Outcome.PAID
    assert reply.payment is not None
    assert counts(clean_database) == {"payments": 1, "payment_attempts": 1, "idempotency_keys": 1}
    assert broken_invariants(clean_database) == []


class HeldBeforeCommit(SqlAlchemyUnitOfWork):
    """A unit of work that stops before its commit, its decision made and staged, until
    released. It holds no lock meanwhile: the key is not stored yet."""

    def __init__(self, service: ServiceEngine) -> None:
        super().__init__(service.engine, session=service.session)
        self.decided = anyio.Event()
        self.release = anyio.Event()

    async def commit(self) -> None:
        self.decided.set()
        await self.release.wait()
        await super().commit()


async def test_a_request_does_not_wait_for_another_with_its_key_and_the_first_commit_wins(
    clean_database: Engine, waiting_service: ServiceEngine, order_id: int
) -> None:
    held = HeldBeforeCommit(waiting_service)
    firsts: list[Reply] = []

    async def first() -> None:
        firsts.append(
            await pay(order_id, TOTAL, key=KEY, request_id="first", uow=held, clock=CLOCK)
        )

    async with anyio.create_task_group() as requests:
        requests.start_soon(first)
        with anyio.fail_after(NO_HANG_SECONDS):
            await held.decided.wait()
        start = time.monotonic()
        second = await pay(
            order_id,
            TOTAL,
            key=KEY,
            request_id="second",
            uow=waiting_service.unit_of_work(),
            clock=CLOCK,
        )
        took = time.monotonic() - start
        held.release.set()

    assert took < 1, took
    assert second.outcome is Outcome.PAID
    [replayed] = firsts
    assert replayed.replayed
    assert replayed.answer == second.answer
    with clean_database.connect() as connection:
        trail = connection.execute(
            text("SELECT request_id, outcome FROM payment_attempts ORDER BY id")
        ).all()
    assert [tuple(row) for row in trail] == [("second", "paid"), ("first", "replayed")]
    assert counts(clean_database) == {"payments": 1, "payment_attempts": 2, "idempotency_keys": 1}
    assert broken_invariants(clean_database) == []


async def test_many_requests_sending_one_key_at_once_pay_once_and_get_the_same_answer(
    clean_database: Engine, waiting_service: ServiceEngine, order_id: int
) -> None:
    requests = 16

    outcomes = await asyncio.gather(
        *(
            pay(order_id, TOTAL, key=KEY, uow=waiting_service.unit_of_work(), clock=CLOCK)
            for _ in range(requests)
        ),
        return_exceptions=True,
    )

    replies = [outcome for outcome in outcomes if isinstance(outcome, Reply)]
    assert len(replies) == requests, outcomes
    [first] = [reply for reply in replies if not reply.replayed]
    assert first.outcome is Outcome.PAID
    assert first.payment is not None
    assert first.answer == plain_answer(Decision(Outcome.PAID, payment=first.payment))
    assert all(reply.answer == first.answer for reply in replies)
    with clean_database.connect() as connection:
        payment_ids = connection.execute(text("SELECT id FROM payments")).scalars().all()
        trail = connection.execute(
            text("SELECT outcome, count(*) FROM payment_attempts GROUP BY outcome")
        ).all()
    assert payment_ids == [first.payment.id]
    assert dict(trail) == {"paid": 1, "replayed": requests - 1}
    assert broken_invariants(clean_database) == []
