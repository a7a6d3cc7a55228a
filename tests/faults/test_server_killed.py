"""The whole server killed with SIGKILL in the middle of a load of payments: every 200 it gave
stands, every other order is paid exactly once or untouched, and a retry with the same key
after a restart replays or pays, never twice (SPEC §3.3, §3.4)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx2
import pytest

from tests.e2e.checks import assert_problem
from tests.e2e.server import running_service
from tests.faults.load import CLIENT_TIMEOUT_SECONDS, PayCall, PaymentLoad, pay, wait_until
from tests.faults.observations import Observe, explained, last_lines
from tests.support.aftermath import (
    FaultDatabase,
    assert_paid_once,
    assert_untouched,
    assert_verified,
    payments_by_order,
    wait_for_service_sessions_to_end,
)
from tests.support.orders import add_orders

pytestmark = pytest.mark.faults

WORKERS = 2
LANES = 6
KEYED_LANES = 4
"""Lanes 0-3 send an Idempotency-Key, lanes 4-5 none: each lane is cut by the kill, so some
unanswered calls carry a key."""
CALLS_PER_LANE = 80
KILL_AFTER_PAYMENTS = 40


def lanes_of(order_ids: list[int], totals: dict[int, str]) -> list[list[PayCall]]:
    lanes: list[list[PayCall]] = [[] for _ in range(LANES)]
    for position, order_id in enumerate(order_ids):
        lane = position % LANES
        key = f"kill-{order_id}" if lane < KEYED_LANES else None
        lanes[lane].append(PayCall(order_id, totals[order_id], key=key))
    return lanes


def test_killing_the_server_mid_load_loses_no_answered_payment_and_pays_nothing_twice(
    fault_database: FaultDatabase, tmp_path: Path, observe: Observe
) -> None:
    engine = fault_database.engine
    amounts = [f"{10 + n // 100}.{n % 100:02d}" for n in range(LANES * CALLS_PER_LANE)]
    order_ids = add_orders(engine, *amounts)
    totals = dict(zip(order_ids, amounts, strict=True))

    with running_service(fault_database.service_settings(), tmp_path, workers=WORKERS) as service:
        load = PaymentLoad(
            service.base_url, lanes_of(order_ids, totals), stop_at_first_silence=True
        )
        load.start()
        try:
            wait_until(
                lambda: load.count(lambda a: a.status == 200) >= KILL_AFTER_PAYMENTS,
                timeout=60.0,
                what=explained(f"{KILL_AFTER_PAYMENTS} payments before the kill", service),
            )
            os.killpg(service.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            load.join(timeout=CLIENT_TIMEOUT_SECONDS + 10)
        finally:
            load.stop()
        first_server_output = last_lines(service.output())
    wait_for_service_sessions_to_end(engine, fault_database.name)

    answers = load.answers
    answered = [a for a in answers if a.response is not None]
    unanswered = [a for a in answers if a.response is None]
    attempted = {a.call.order_id for a in answers}
    observe("calls", len(answers))
    observe("answered", dict(Counter(a.status for a in answered)))
    observe("unanswered", len(unanswered))
    observe("unanswered_keyed", sum(1 for a in unanswered if a.call.key is not None))
    observe("answered_after_kill", sum(1 for a in answered if a.started + a.elapsed > killed_at))
    # Each order was sent once, with its total: before the kill, nothing but a payment.
    assert [a for a in answered if a.status != 200] == [], first_server_output
    assert len({a.call.order_id for a in answers}) == len(answers)
    assert len(unanswered) >= 1, "the kill came after the load, not in its middle"
    assert any(a.call.key is not None for a in unanswered), unanswered

    assert_paid_once(engine, totals, {a.call.order_id: a.payment_id() for a in answered})
    assert_verified(fault_database)
    payments = payments_by_order(engine, [a.call.order_id for a in unanswered])
    paid_unanswered = {order_id: stored[0].id for order_id, stored in payments.items() if stored}
    assert_paid_once(engine, totals, paid_unanswered)
    assert_untouched(
        engine, [a.call.order_id for a in unanswered if a.call.order_id not in paid_unanswered]
    )
    assert_untouched(engine, [o for o in order_ids if o not in attempted])
    observe("unanswered_but_paid", len(paid_unanswered))

    with (
        running_service(fault_database.service_settings(), tmp_path) as fresh,
        httpx2.Client(base_url=fresh.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client,
    ):
        retries = [(a, pay(client, a.call)) for a in unanswered]

    receipts: dict[int, int] = {}
    for first, retry in retries:
        order_id = first.call.order_id
        assert retry.response is not None, retry
        if first.call.key is not None:
            # The key commits with the payment: a paid order replays its receipt, an
            # unpaid one is paid now.
            assert retry.status == 200, (retry, retry.response.text)
            assert retry.replayed == (order_id in paid_unanswered), (retry, paid_unanswered)
            if retry.replayed:
                assert retry.payment_id() == paid_unanswered[order_id]
            receipts[order_id] = retry.payment_id()
        elif order_id in paid_unanswered:
            body = assert_problem(
                retry.response, 409, "order_not_payable", extra=frozenset({"order_status"})
            )
            assert body["order_status"] == "paid"
            receipts[order_id] = paid_unanswered[order_id]
        else:
            assert retry.status == 200, (retry, retry.response.text)
            receipts[order_id] = retry.payment_id()
    observe("retries", dict(Counter((r.status, r.replayed) for _, r in retries)))
    assert_paid_once(engine, totals, receipts)
    assert_verified(fault_database)
