"""The database goes away under a running service, or is away when it starts: payments fail fast
with 503, nothing half-written, and the service recovers by itself once the database is back
(SPEC §3.3, §3.6)."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import Engine, text

from tests.e2e.server import running_service
from tests.faults.load import (
    CLIENT_TIMEOUT_SECONDS,
    Answer,
    PayCall,
    PaymentLoad,
    pay,
    wait_until,
)
from tests.faults.observations import Observe, explained, last_lines
from tests.faults.problems import assert_unavailable
from tests.support.aftermath import (
    FaultDatabase,
    assert_paid_once,
    assert_untouched,
    assert_verified,
    terminate_sessions,
    wait_for_service_sessions_to_end,
)
from tests.support.orders import add_orders
from tests.support.restartable_postgres import RestartablePostgres

pytestmark = pytest.mark.faults

WORKERS = 2
FAIL_FAST_SECONDS = 10.0
"""How long a refusal may take while the database is away: generous for a busy machine, far
below a hang (the clients wait up to CLIENT_TIMEOUT_SECONDS)."""
RECOVERY_TIMEOUT_SECONDS = 30.0
PAYMENTS_AROUND_FAULT = 10
TERMINATION_ROUNDS = 3
TERMINATION_LANES = 3
SHORT_TIMEOUTS = {
    "PAYMENT_DB_CONNECT_TIMEOUT_SECONDS": "1",
    "PAYMENT_DB_POOL_TIMEOUT_SECONDS": "1",
}
IDLE_SESSIONS = 6
"""Sessions the service is made to open at once, then to keep idle in its pool."""
LOCK_WAIT_MS = "30000"
"""The service's lock and statement timeouts, and its request deadline, while the test holds
orders' row locks."""


def keyed_lanes(
    database: FaultDatabase, *, lanes: int, calls_per_lane: int
) -> tuple[dict[int, str], list[list[PayCall]]]:
    """Pending orders and, for each lane, calls paying its share of them once each, every
    call with a key of its own so that a call refused with 503 can be retried safely."""
    amounts = [f"{20 + n // 100}.{n % 100:02d}" for n in range(lanes * calls_per_lane)]
    order_ids = add_orders(database.engine, *amounts)
    totals = dict(zip(order_ids, amounts, strict=True))
    calls = [PayCall(o, totals[o], key=f"outage-{o}") for o in order_ids]
    return totals, [calls[lane::lanes] for lane in range(lanes)]


def timed_get(client: httpx2.Client, path: str) -> tuple[httpx2.Response, float]:
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


def ready(client: httpx2.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx2.TransportError:
        return False


def successes_started_after(load: PaymentLoad, moment: float) -> int:
    return load.count(lambda a: a.status == 200 and a.started > moment)


def answered_beyond(load: PaymentLoad, count: int) -> Callable[[], bool]:
    return lambda: len(load.answers) >= count


def assert_answered_fast_with_200_or_503(answers: Iterable[Answer], output: str) -> list[Answer]:
    """Every call got an answer, 200 or a well-formed 503 within the bound; the 503s."""
    answers = list(answers)
    silent = [a for a in answers if a.response is None]
    assert silent == [], f"calls without an answer (hang or crash): {silent}\n{output}"
    unexpected = [
        (a.status, a.response.text if a.response else "")
        for a in answers
        if a.status not in (200, 503)
    ]
    assert unexpected == [], f"{unexpected}\n{output}"
    refused = [a for a in answers if a.status == 503]
    for answer in refused:
        assert answer.response is not None
        assert_unavailable(answer.response)
        assert answer.elapsed < FAIL_FAST_SECONDS, answer
    return refused


def retry_refused(client: httpx2.Client, refused: list[Answer]) -> dict[int, Answer]:
    """Each refused call sent again with its key, now that the database is back: it pays
    the order, or replays the payment if the refused call committed after all."""
    retries = {a.call.order_id: pay(client, a.call) for a in refused}
    for retry in retries.values():
        assert retry.status == 200, (retry, retry.response.text if retry.response else "")
    return retries


def receipts_of(answers: Iterable[Answer]) -> dict[int, int]:
    return {a.call.order_id: a.payment_id() for a in answers if a.status == 200}


@contextmanager
def row_locked(engine: Engine, *order_ids: int) -> Iterator[None]:
    """The orders' rows locked by the test until the block ends, so a payment of them waits."""
    with engine.connect() as connection, connection.begin() as transaction:
        connection.execute(
            text("SELECT id FROM orders WHERE id = ANY(:ids) FOR UPDATE"), {"ids": list(order_ids)}
        )
        try:
            yield
        finally:
            transaction.rollback()


def service_sessions_waiting_on_a_lock(database: FaultDatabase) -> int:
    with database.engine.connect() as connection:
        waiting: int = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :database"
                " AND application_name = 'payment-service' AND wait_event_type = 'Lock'"
            ),
            {"database": database.name},
        ).scalar_one()
    return waiting


def seconds(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):.3f} s, max {max(values):.3f} s"


def test_payments_fail_fast_while_postgres_is_stopped_and_recover_when_it_is_back(
    fault_postgres: RestartablePostgres,
    fault_database: FaultDatabase,
    tmp_path: Path,
    observe: Observe,
) -> None:
    engine = fault_database.engine
    totals, lanes = keyed_lanes(fault_database, lanes=2, calls_per_lane=1000)

    with (
        running_service(
            fault_database.service_settings(**SHORT_TIMEOUTS), tmp_path, workers=WORKERS
        ) as service,
        httpx2.Client(base_url=service.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client,
    ):
        load = PaymentLoad(service.base_url, lanes, pause=0.02)
        load.start()
        try:
            wait_until(
                lambda: load.count(lambda a: a.status == 200) >= PAYMENTS_AROUND_FAULT,
                timeout=RECOVERY_TIMEOUT_SECONDS,
                what="payments before the stop",
            )
            stopping_at = time.monotonic()
            fault_postgres.stop()
            stopped_at = time.monotonic()
            wait_until(
                lambda: load.count(lambda a: a.started > stopped_at) >= PAYMENTS_AROUND_FAULT,
                timeout=RECOVERY_TIMEOUT_SECONDS,
                what="calls while PostgreSQL is stopped",
            )
            readiness = [timed_get(client, "/readyz") for _ in range(3)]
            starting_at = time.monotonic()
            fault_postgres.start()
            started_at = time.monotonic()
            ready_after = wait_until(
                lambda: ready(client),
                timeout=RECOVERY_TIMEOUT_SECONDS,
                what=explained("/readyz 200 after PostgreSQL started", service),
            )
            paying_after = wait_until(
                lambda: successes_started_after(load, started_at) >= PAYMENTS_AROUND_FAULT,
                timeout=RECOVERY_TIMEOUT_SECONDS,
                what=explained("payments after PostgreSQL started", service),
            )
        finally:
            load.stop()
        answers = load.answers
        refused = assert_answered_fast_with_200_or_503(answers, last_lines(service.output()))
        retries = retry_refused(client, refused)

    away = [a for a in answers if a.started > stopped_at and a.started + a.elapsed < starting_at]
    observe("statuses", dict(Counter(a.status for a in answers)))
    observe("pg_stop_took", f"{stopped_at - stopping_at:.2f}s")
    observe("pg_start_took", f"{started_at - starting_at:.2f}s")
    observe("calls_while_away", len(away))
    observe("503_latency", seconds([a.elapsed for a in refused]))
    observe("readyz_while_away", seconds([elapsed for _, elapsed in readiness]))
    observe("readyz_200_after_start", f"{ready_after:.2f}s")
    observe("10_payments_after_start", f"{paying_after:.2f}s")
    observe("retried_503_replayed", sum(1 for r in retries.values() if r.replayed))
    assert away, "no call was made while PostgreSQL was stopped"
    assert [a for a in away if a.status != 503] == []
    for response, elapsed in readiness:
        assert_unavailable(response)
        assert elapsed < FAIL_FAST_SECONDS
    assert_paid_once(engine, totals, receipts_of(answers))
    assert_paid_once(engine, totals, {**receipts_of(answers), **receipts_of(retries.values())})
    assert_untouched(engine, set(totals) - {a.call.order_id for a in answers})
    assert_verified(fault_database)


def test_payments_recover_by_themselves_after_every_database_session_is_terminated(
    fault_database: FaultDatabase, tmp_path: Path, observe: Observe
) -> None:
    engine = fault_database.engine
    totals, lanes = keyed_lanes(fault_database, lanes=TERMINATION_LANES, calls_per_lane=1000)

    with (
        running_service(
            fault_database.service_settings(**SHORT_TIMEOUTS), tmp_path, workers=WORKERS
        ) as service,
        httpx2.Client(base_url=service.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client,
    ):
        load = PaymentLoad(service.base_url, lanes, pause=0.01)
        load.start()
        terminated: list[int] = []
        try:
            wait_until(
                lambda: load.count(lambda a: a.status == 200) >= PAYMENTS_AROUND_FAULT,
                timeout=RECOVERY_TIMEOUT_SECONDS,
                what="payments before the terminations",
            )
            for _ in range(TERMINATION_ROUNDS):
                enough = answered_beyond(load, len(load.answers) + TERMINATION_LANES)
                terminated.append(terminate_sessions(engine, fault_database.name))
                wait_until(
                    enough,
                    timeout=RECOVERY_TIMEOUT_SECONDS,
                    what="answers after a termination",
                )
            last_at = time.monotonic()
            paying_after = wait_until(
                lambda: successes_started_after(load, last_at) >= PAYMENTS_AROUND_FAULT,
                timeout=RECOVERY_TIMEOUT_SECONDS,
                what=explained("payments after the terminations", service),
            )
        finally:
            load.stop()
        answers = load.answers
        refused = assert_answered_fast_with_200_or_503(answers, last_lines(service.output()))
        retries = retry_refused(client, refused)
        still_ready = ready(client)

    observe("statuses", dict(Counter(a.status for a in answers)))
    observe("sessions_terminated", terminated)
    observe("10_payments_after", f"{paying_after:.2f}s")
    observe("retried_503_replayed", sum(1 for r in retries.values() if r.replayed))
    assert sum(terminated) >= 1, "no session was there to terminate"
    # Only a call whose session was cut while it ran may fail; a pooled session found dead
    # is replaced before use.
    assert len(refused) <= TERMINATION_LANES * TERMINATION_ROUNDS, refused
    assert still_ready
    assert_paid_once(engine, totals, receipts_of(answers))
    assert_paid_once(engine, totals, {**receipts_of(answers), **receipts_of(retries.values())})
    assert_untouched(engine, set(totals) - {a.call.order_id for a in answers})
    assert_verified(fault_database)


def test_a_pool_whose_idle_sessions_were_all_terminated_fails_no_payment(
    fault_database: FaultDatabase, tmp_path: Path, observe: Observe
) -> None:
    """No call runs when the sessions are terminated, so none may fail: the pool holds several
    dead connections, and the first call that meets one replaces it and every other dead one
    it meets before it answers (the pool does not ping a connection before lending it)."""
    engine = fault_database.engine
    contended = add_orders(engine, *["64.00"] * IDLE_SESSIONS)
    amounts = [f"{30 + n}.00" for n in range(IDLE_SESSIONS + 2)]
    order_ids = add_orders(engine, *amounts)
    totals = dict(zip(order_ids, amounts, strict=True))
    held = {
        "PAYMENT_DB_LOCK_TIMEOUT_MS": LOCK_WAIT_MS,
        "PAYMENT_DB_STATEMENT_TIMEOUT_MS": LOCK_WAIT_MS,
        "PAYMENT_REQUEST_DEADLINE_MS": LOCK_WAIT_MS,
    }

    with (
        running_service(
            fault_database.service_settings(**SHORT_TIMEOUTS, **held), tmp_path
        ) as service,
        httpx2.Client(base_url=service.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client,
    ):
        # Payments of locked orders hold a connection each until the locks are released: the
        # pool then keeps that many idle sessions. (One order each: a worker lets only one
        # payment of an order at a time wait on its lock.)
        burst = PaymentLoad(service.base_url, [[PayCall(o, "64.00")] for o in contended])
        with row_locked(engine, *contended):
            burst.start()
            wait_until(
                lambda: service_sessions_waiting_on_a_lock(fault_database) == IDLE_SESSIONS,
                timeout=RECOVERY_TIMEOUT_SECONDS,
                what=explained(f"{IDLE_SESSIONS} payments waiting on the lock", service),
            )
        burst.join(timeout=CLIENT_TIMEOUT_SECONDS + 10)
        terminated = terminate_sessions(engine, fault_database.name)
        wait_for_service_sessions_to_end(engine, fault_database.name)
        answers = [pay(client, PayCall(o, totals[o], key=f"idle-{o}")) for o in order_ids]
        output = last_lines(service.output())

    burst_answers = burst.answers
    observe("burst", dict(Counter(a.status for a in burst_answers)))
    observe("idle_sessions_terminated", terminated)
    observe("statuses_after", dict(Counter(a.status for a in answers)))
    assert sorted(a.status or 0 for a in burst_answers) == [200] * IDLE_SESSIONS
    assert terminated >= IDLE_SESSIONS, "the pool did not keep its sessions idle"
    failed = [
        (a.status, a.response.text if a.response else a.error) for a in answers if a.status != 200
    ]
    assert failed == [], f"{failed}\n{output}"
    assert_paid_once(engine, totals, receipts_of(answers))
    assert_verified(fault_database)


def test_service_started_while_postgres_is_down_becomes_ready_once_it_is_up(
    fault_postgres: RestartablePostgres,
    fault_database: FaultDatabase,
    tmp_path: Path,
    observe: Observe,
) -> None:
    engine = fault_database.engine
    [order_id] = add_orders(engine, "55.55")
    call = PayCall(order_id, "55.55", key="started-without-database")
    fault_postgres.stop()

    with (
        running_service(
            fault_database.service_settings(**SHORT_TIMEOUTS), tmp_path, probe="/livez"
        ) as service,
        httpx2.Client(base_url=service.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client,
    ):
        live = client.get("/livez")
        readiness, readyz_took = timed_get(client, "/readyz")
        refused = pay(client, call)
        fault_postgres.start()
        ready_after = wait_until(
            lambda: ready(client),
            timeout=RECOVERY_TIMEOUT_SECONDS,
            what=explained("/readyz 200 after PostgreSQL started", service),
        )
        paid = pay(client, call)
        output = last_lines(service.output())

    observe("readyz_while_down", f"{readyz_took:.3f}s")
    observe("pay_while_down", f"{refused.status} in {refused.elapsed:.3f}s")
    observe("readyz_200_after_start", f"{ready_after:.2f}s")
    assert live.status_code == 200
    assert_unavailable(readiness)
    assert readyz_took < FAIL_FAST_SECONDS
    assert refused.response is not None, (refused, output)
    assert_unavailable(refused.response)
    assert refused.elapsed < FAIL_FAST_SECONDS
    assert paid.status == 200, (paid, output)
    assert not paid.replayed  # the refusal wrote nothing, not even its key
    assert_paid_once(engine, {order_id: "55.55"}, {order_id: paid.payment_id()})
    assert_verified(fault_database)
