"""Idempotency keys on PostgreSQL: a key in use by a transaction still running is waited for a
bounded time, then refused; a key whose transaction ends within the wait is answered from it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, select, text

from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from payment.domain import services
from payment.domain.attempts import Decision, IdempotencyRecord, Outcome, RecordedAnswer
from payment.domain.errors import IdempotencyKeyInUse, StorageUnavailable
from payment.domain.services import Reply
from tests.integration.bounded import error_within
from tests.support.attempts import CALLER, attempt, pay, plain_answer
from tests.support.orders import add_orders, broken_invariants

NOW = datetime(2026, 11, 26, 10, 15, 0, 123456, tzinfo=UTC)
KEY = "3a6c0f2e-key"
TOTAL = "60.00"
NO_HANG_SECONDS = 15


class FixedClock:
    def now(self) -> datetime:
        return NOW


CLOCK = FixedClock()


def claim(uow: SqlAlchemyUnitOfWork, order_id: int, key: str = KEY) -> IdempotencyRecord | None:
    return uow.idempotency.claim(
        CALLER,
        key,
        fingerprint=attempt(order_id, TOTAL, key=key).fingerprint,
        at=NOW,
        expires_at=NOW + timedelta(hours=24),
    )


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


def wait_until(condition: Callable[[], bool], seconds: float = NO_HANG_SECONDS) -> None:
    """Poll ``condition`` until it holds; fail the test if it does not within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still not so after {seconds} s"
        time.sleep(0.01)


def timed(action: Callable[[], Any]) -> tuple[BaseException | None, float]:
    """``action``'s error (None if it returned) and how long it took, bounded by NO_HANG."""
    took: list[float] = []

    def run() -> None:
        start = time.monotonic()
        try:
            action()
        finally:
            took.append(time.monotonic() - start)

    error = error_within(NO_HANG_SECONDS, run)
    return error, took[0]


class Held:
    """A request paying through the use case that stops after its decision, before its
    commit, until released: it holds its key (and its order) meanwhile."""

    def __init__(self, engine: Engine, order_id: int, amount: str = TOTAL) -> None:
        self.decided = threading.Event()
        self.release = threading.Event()
        self.fail = False
        self.replies: list[Reply] = []
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._pay, args=(engine, order_id, amount), daemon=True
        )

    def _answer(self, decision: Decision) -> RecordedAnswer:
        self.decided.set()
        assert self.release.wait(NO_HANG_SECONDS), "never released"
        if self.fail:
            raise RuntimeError("the held request fails before its commit")
        return plain_answer(decision)

    def _pay(self, engine: Engine, order_id: int, amount: str) -> None:
        try:
            self.replies.append(
                services.pay(
                    attempt(order_id, amount, key=KEY),
                    uow=SqlAlchemyUnitOfWork(engine),
                    clock=CLOCK,
                    answer_for=self._answer,
                )
            )
        except BaseException as error:
            self.errors.append(error)

    def __enter__(self) -> Held:
        self._thread.start()
        assert self.decided.wait(NO_HANG_SECONDS), "the held request never decided"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self._thread.join(NO_HANG_SECONDS)
        assert not self._thread.is_alive()


@pytest.fixture
def order_id(clean_database: Engine) -> int:
    [order_id] = add_orders(clean_database, TOTAL)
    return order_id


def test_a_key_claimed_by_a_running_transaction_is_refused_as_in_use_after_the_wait(
    clean_database: Engine, order_id: int
) -> None:
    with SqlAlchemyUnitOfWork(clean_database) as holder:
        assert claim(holder, order_id) is None

        error, took = timed(
            lambda: pay(
                order_id,
                TOTAL,
                key=KEY,
                uow=SqlAlchemyUnitOfWork(clean_database, idempotency_wait_ms=300),
                clock=CLOCK,
            )
        )

    assert isinstance(error, IdempotencyKeyInUse)
    assert error.key == KEY
    assert 0.25 <= took < 1.5, took
    # The holder rolled back: whatever is left was written by the refused request.
    assert counts(clean_database) == {"payments": 0, "payment_attempts": 0, "idempotency_keys": 0}
    assert broken_invariants(clean_database) == []


def test_a_request_waiting_on_a_key_gets_the_first_answer_when_it_commits_within_the_wait(
    clean_database: Engine, order_id: int
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool, Held(clean_database, order_id) as first:
        retry = pool.submit(
            pay,
            order_id,
            TOTAL,
            key=KEY,
            uow=SqlAlchemyUnitOfWork(clean_database, idempotency_wait_ms=10_000),
            clock=CLOCK,
        )
        wait_until(lambda: lock_waits(clean_database) == 1)
        assert not retry.done()
        first.release.set()
        replayed = retry.result(timeout=NO_HANG_SECONDS)

    assert first.errors == []
    [reply] = first.replies
    assert reply.outcome is Outcome.PAID
    assert reply.payment is not None
    assert replayed.replayed
    assert replayed.answer == reply.answer
    assert counts(clean_database) == {"payments": 1, "payment_attempts": 2, "idempotency_keys": 1}
    assert broken_invariants(clean_database) == []


def test_a_request_waiting_on_a_key_pays_when_the_first_request_rolls_back_within_the_wait(
    clean_database: Engine, order_id: int
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool, Held(clean_database, order_id) as first:
        retry = pool.submit(
            pay,
            order_id,
            TOTAL,
            key=KEY,
            uow=SqlAlchemyUnitOfWork(clean_database, idempotency_wait_ms=10_000),
            clock=CLOCK,
        )
        wait_until(lambda: lock_waits(clean_database) == 1)
        first.fail = True
        first.release.set()
        reply = retry.result(timeout=NO_HANG_SECONDS)

    assert first.replies == []
    assert [type(error) for error in first.errors] == [RuntimeError]
    assert reply.outcome is Outcome.PAID
    assert reply.payment is not None
    assert counts(clean_database) == {"payments": 1, "payment_attempts": 1, "idempotency_keys": 1}
    assert broken_invariants(clean_database) == []


class UnitOfWorkShowingItsSettings(SqlAlchemyUnitOfWork):
    def setting(self, name: str) -> str:
        return str(self._connection.execute(select(func.current_setting(name))).scalar_one())


def engine_with_lock_timeout(engine: Engine, milliseconds: int, **options: int) -> Engine:
    """An engine whose connections start with this lock timeout, as the service's do."""
    return create_engine(
        engine.url, connect_args={"options": f"-c lock_timeout={milliseconds}"}, **options
    )


@pytest.fixture
def one_connection_engine(clean_database: Engine) -> Iterator[Engine]:
    """An engine that always lends the same connection, to see what a transaction leaves;
    its connections' own lock timeout is 1234 ms."""
    engine = engine_with_lock_timeout(clean_database, 1234, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def test_after_a_claim_the_lock_timeout_is_the_connections_own_again(
    one_connection_engine: Engine, order_id: int
) -> None:
    with one_connection_engine.connect() as connection:
        session_default = connection.execute(text("SHOW lock_timeout")).scalar_one()

    with UnitOfWorkShowingItsSettings(one_connection_engine, idempotency_wait_ms=300) as uow:
        assert claim(uow, order_id) is None
        after_a_new_claim = uow.setting("lock_timeout")
        uow.idempotency.record_answer(CALLER, KEY, RecordedAnswer(200, "{}"))
        uow.commit()
    with UnitOfWorkShowingItsSettings(one_connection_engine, idempotency_wait_ms=300) as uow:
        assert claim(uow, order_id) is not None
        after_a_replayed_claim = uow.setting("lock_timeout")
    with one_connection_engine.connect() as connection:
        after_the_unit_of_work = connection.execute(text("SHOW lock_timeout")).scalar_one()

    assert session_default == "1234ms"
    assert (after_a_new_claim, after_a_replayed_claim) == ("1234ms", "1234ms")
    assert after_the_unit_of_work == session_default


def test_after_a_claim_a_held_order_lock_is_waited_for_the_lock_timeout_not_the_key_wait(
    clean_database: Engine, order_id: int
) -> None:
    engine = engine_with_lock_timeout(clean_database, 700)
    with clean_database.connect() as other_transaction:
        other_transaction.execute(
            text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE"), {"id": order_id}
        )

        error, took = timed(
            lambda: pay(
                order_id,
                TOTAL,
                key=KEY,
                uow=SqlAlchemyUnitOfWork(engine, idempotency_wait_ms=50),
                clock=CLOCK,
            )
        )
        other_transaction.rollback()
    engine.dispose()

    assert isinstance(error, StorageUnavailable)
    assert 0.6 <= took < 5, took
    assert counts(clean_database) == {"payments": 0, "payment_attempts": 0, "idempotency_keys": 0}


def test_many_threads_sending_one_key_at_once_pay_once_and_get_the_same_answer(
    clean_database: Engine, order_id: int
) -> None:
    threads = 16
    start = threading.Barrier(threads)

    def send() -> Reply | Exception:
        start.wait(timeout=NO_HANG_SECONDS)
        try:
            return pay(
                order_id, TOTAL, key=KEY, uow=SqlAlchemyUnitOfWork(clean_database), clock=CLOCK
            )
        except Exception as error:
            return error

    with ThreadPoolExecutor(max_workers=threads) as pool:
        outcomes = list(pool.map(lambda _: send(), range(threads)))

    replies = [outcome for outcome in outcomes if isinstance(outcome, Reply)]
    in_use = [outcome for outcome in outcomes if isinstance(outcome, IdempotencyKeyInUse)]
    assert len(replies) + len(in_use) == threads, outcomes
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
    replays = len(replies) - 1
    assert dict(trail) == ({"paid": 1, "replayed": replays} if replays else {"paid": 1})
    assert broken_invariants(clean_database) == []
