"""One hot order, then a server out of connection slots, under a running service (SPEC §3.6).

With one order's row locked elsewhere while many clients keep paying it, the other orders pay
at their usual speed and /readyz stays 200: a worker lets one payment of the order at a time
wait on the lock, and answers the order's other payments 503 with ``Retry-After`` at once,
without a database connection. With every connection slot of the server taken, /readyz stays
200 while payments go on over the pool's connections."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import psycopg
import pytest
from psycopg import Connection

from tests.e2e.checks import assert_problem
from tests.e2e.server import running_service
from tests.faults.load import (
    CLIENT_TIMEOUT_SECONDS,
    Answer,
    PayCall,
    PaymentLoad,
    pay,
    wait_until,
)
from tests.faults.observations import Observe, explained
from tests.faults.problems import assert_unavailable
from tests.faults.test_database_outage import row_locked
from tests.support.aftermath import (
    FaultDatabase,
    assert_paid_once,
    assert_verified,
    payments_by_order,
)
from tests.support.orders import add_orders
from tests.support.probe_sampler import Probes
from tests.support.restartable_postgres import RestartablePostgres

pytestmark = pytest.mark.faults

WORKERS = 2
HEALTHY_LANES = 4
STORM_CLIENTS = 30
STORM_PAUSE = 0.05
PHASE_SECONDS = 1.5
LOCK_TIMEOUT = 1.0
DEADLINE = 2.0
PATIENCE = 0.5
"""The service's wait for an order's payment already under way (OrderGate's patience)."""
SLACK = 0.7
"""What a busy machine may add to a bound before a test calls it broken."""
RECOVERY_SECONDS = 30.0
ORDER_STATUS = frozenset({"order_status"})


def healthy_lanes(database: FaultDatabase) -> tuple[dict[int, str], list[list[PayCall]]]:
    per_lane = 400
    amounts = [f"{20 + n // 100}.{n % 100:02d}" for n in range(HEALTHY_LANES * per_lane)]
    order_ids = add_orders(database.engine, *amounts)
    totals = dict(zip(order_ids, amounts, strict=True))
    calls = [PayCall(o, totals[o], key=f"healthy-{o}") for o in order_ids]
    return totals, [calls[lane::HEALTHY_LANES] for lane in range(HEALTHY_LANES)]


def between(answers: list[Answer], start: float, end: float) -> list[Answer]:
    return [a for a in answers if start <= a.started and a.started + a.elapsed <= end]


def ms(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[int(len(ordered) * 0.95)]
    return (
        f"n={len(values)}, median {statistics.median(values) * 1000:.0f} ms,"
        f" p95 {p95 * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"
    )


@contextmanager
def every_slot_taken(postgres: RestartablePostgres) -> Iterator[int]:
    """Sessions opened on the server until it refuses one; closed at the end of the block.
    How many were opened."""
    held: list[Connection[tuple[object, ...]]] = []
    try:
        while True:
            try:
                held.append(
                    psycopg.connect(
                        host=postgres.socket_dir,
                        user="postgres",
                        dbname="postgres",
                        autocommit=True,
                    )
                )
            except psycopg.OperationalError:
                break
        yield len(held)
    finally:
        for connection in held:
            connection.close()


def test_a_hot_order_leaves_the_others_paying_and_readyz_ready_then_full_slots_too(
    fault_postgres: RestartablePostgres,
    fault_database: FaultDatabase,
    tmp_path: Path,
    observe: Observe,
) -> None:
    engine = fault_database.engine
    totals, lanes = healthy_lanes(fault_database)
    [hot] = add_orders(engine, "99.00")
    storm = [[PayCall(hot, "99.00")] * 1000 for _ in range(STORM_CLIENTS)]
    settings = fault_database.service_settings(
        PAYMENT_DB_POOL_SIZE="4",
        PAYMENT_DB_LOCK_TIMEOUT_MS=str(int(LOCK_TIMEOUT * 1000)),
        PAYMENT_REQUEST_DEADLINE_MS=str(int(DEADLINE * 1000)),
        PAYMENT_DB_POOL_TIMEOUT_SECONDS="2",
    )

    with running_service(settings, tmp_path, workers=WORKERS) as service:
        load = PaymentLoad(service.base_url, lanes, pause=0.005)
        storming = PaymentLoad(service.base_url, storm, pause=STORM_PAUSE)
        with Probes(service.base_url, tmp_path) as probes:
            load.start()
            try:
                wait_until(
                    lambda: load.count(lambda a: a.status == 200) >= 40,
                    timeout=RECOVERY_SECONDS,
                    what=explained("payments before the lock", service),
                )
                calm = time.monotonic()
                time.sleep(0.5)
                with row_locked(engine, hot):
                    stormy = time.monotonic()
                    storming.start()
                    time.sleep(PHASE_SECONDS)
                    storming.stop()
                    calm_again = time.monotonic()
                with every_slot_taken(fault_postgres) as slots:
                    full = time.monotonic()
                    time.sleep(PHASE_SECONDS)
                    full_ended = time.monotonic()
            finally:
                load.stop()
        answers = load.answers
        storm_answers = storming.answers
        with httpx2.Client(base_url=service.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
            hot_paid = pay(client, PayCall(hot, "99.00", key="hot"))

    before = between(answers, calm, stormy)
    during = between(answers, stormy, calm_again)
    in_full = between(answers, full, full_ended)
    ready_during = probes.between("/readyz", stormy, calm_again)
    ready_in_full = probes.between("/readyz", full, full_ended)
    slow_storm = [a for a in storm_answers if a.elapsed > PATIENCE + SLACK]
    observe("healthy_before", ms([a.elapsed for a in before]))
    observe("healthy_during_storm", ms([a.elapsed for a in during]))
    observe("storm", dict(Counter(a.status for a in storm_answers)))
    observe("storm_answered", ms([a.elapsed for a in storm_answers]))
    observe("readyz_during_storm", dict(Counter(s for s, _ in ready_during)))
    observe("slots_taken", slots)
    observe("healthy_with_no_slot_left", dict(Counter(a.status for a in in_full)))
    observe("readyz_with_no_slot_left", dict(Counter(s for s, _ in ready_in_full)))

    # The storm: every payment of the hot order refused, retryable, and almost all at once;
    # only the one payment per worker at a time let wait on the lock takes up to its timeout
    # (or the deadline, when it queued for the row behind the other worker's).
    assert storm_answers
    for answer in storm_answers:
        assert answer.response is not None, answer
        assert_unavailable(answer.response)
        assert answer.elapsed < DEADLINE + SLACK, answer
    turns = WORKERS * (int(PHASE_SECONDS / LOCK_TIMEOUT) + 2)
    assert len(slow_storm) <= turns, ms([a.elapsed for a in slow_storm])
    # The others pay as before, and the service is ready all along.
    assert len(during) >= 20, len(during)
    assert {a.status for a in during} == {200}
    assert max(a.elapsed for a in during) < PATIENCE + SLACK, ms([a.elapsed for a in during])
    assert ready_during
    assert {s for s, _ in ready_during} == {200}
    # No connection slot left on the server: payments go on, and the service stays ready.
    assert slots > 0
    assert in_full
    assert Counter(a.status for a in in_full)[200] >= len(in_full) * 0.9
    assert ready_in_full
    assert {s for s, _ in ready_in_full} == {200}
    # The hot order, once free, is paid exactly once: by the last call, or by a payment the
    # deadline cut while it waited on the lock, which the server made once the lock was gone
    # (its caller was answered 503, "may have been made").
    assert hot_paid.response is not None, hot_paid
    if hot_paid.status != 200:
        assert_problem(hot_paid.response, 409, "order_not_payable", extra=ORDER_STATUS)
    [hot_payment] = payments_by_order(engine, [hot])[hot]
    receipts = {a.call.order_id: a.payment_id() for a in answers if a.status == 200}
    assert_paid_once(engine, {**totals, hot: "99.00"}, {**receipts, hot: hot_payment.id})
    assert_verified(fault_database)
