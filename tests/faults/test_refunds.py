"""Refunds under faults: the server SIGKILLed, then PostgreSQL restarted, in the middle of many
partial refunds at once over two workers. Every refund is all or nothing, the refunds of a
payment never add up to more than it, every 201 stands, and a keyed retry after the fault
refunds at most once (SPEC §2 Refunds, §3.3, §3.4)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import Engine, text

from tests.e2e.server import running_service
from tests.faults.load import CLIENT_TIMEOUT_SECONDS, wait_until
from tests.faults.observations import Observe
from tests.support.aftermath import FaultDatabase, assert_verified, wait_for_service_sessions_to_end
from tests.support.orders import add_orders
from tests.support.restartable_postgres import RestartablePostgres

pytestmark = pytest.mark.faults

WORKERS = 2
PAYMENTS = 6
TOTAL = "10.00"
LANES = 8
"""Client threads; the even ones send an Idempotency-Key with each refund."""
REFUND = "0.50"
"""Each call asks this much: 20 of them would refund a payment in full, and the lanes ask far
more than that, so most payments end refunded in full and many calls are refused."""
SHORT_DEADLINE = {"PAYMENT_REQUEST_DEADLINE_MS": "1500", "PAYMENT_DB_CONNECT_TIMEOUT_SECONDS": "1"}
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class RefundCall:
    payment_id: int
    key: str | None

    def headers(self) -> dict[str, str]:
        return JSON if self.key is None else {**JSON, "Idempotency-Key": self.key}


@dataclass(frozen=True, slots=True)
class RefundAnswer:
    call: RefundCall
    status: int | None
    """None: no answer came (connection refused or cut)."""
    body: dict[str, object] | None
    started: float


class RefundLoad:
    """``LANES`` threads refunding the payments round and round until stopped."""

    def __init__(self, base_url: str, payment_ids: list[int]) -> None:
        self.base_url = base_url
        self.payment_ids = payment_ids
        self.answers: list[RefundAnswer] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._lane, args=(lane,), daemon=True) for lane in range(LANES)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CLIENT_TIMEOUT_SECONDS + 5)

    def count(self, status: int | None) -> int:
        with self._lock:
            return sum(1 for a in self.answers if a.status == status)

    def _lane(self, lane: int) -> None:
        calls = 0
        with httpx2.Client(base_url=self.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
            while not self._stop.is_set():
                payment_id = self.payment_ids[(lane + calls) % len(self.payment_ids)]
                key = f"refund-{lane}-{calls}" if lane % 2 == 0 else None
                calls += 1
                call = RefundCall(payment_id, key)
                started = time.monotonic()
                try:
                    response = client.post(
                        f"/payments/{payment_id}/refunds",
                        content=f'{{"amount": "{REFUND}"}}',
                        headers=call.headers(),
                    )
                    answer = RefundAnswer(call, response.status_code, response.json(), started)
                except (httpx2.HTTPError, ValueError):
                    answer = RefundAnswer(call, None, None, started)
                    time.sleep(0.05)
                with self._lock:
                    self.answers.append(answer)


def pay_all(base_url: str, engine: Engine) -> list[int]:
    order_ids = add_orders(engine, *([TOTAL] * PAYMENTS))
    with httpx2.Client(base_url=base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
        receipts = [
            client.post(
                "/pay", content=f'{{"order_id": {order_id}, "amount": "{TOTAL}"}}', headers=JSON
            )
            for order_id in order_ids
        ]
    assert [r.status_code for r in receipts] == [200] * PAYMENTS
    return [r.json()["payment_id"] for r in receipts]


def refunds_by_key(engine: Engine) -> Counter[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT idempotency_key FROM refund_attempts"
                " WHERE outcome = 'refunded' AND idempotency_key IS NOT NULL"
            )
        ).scalars()
        return Counter(rows)


def stored_refunds(engine: Engine) -> dict[int, tuple[int, Decimal]]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, payment_id, amount FROM refunds")).all()
    return {refund_id: (payment_id, amount) for refund_id, payment_id, amount in rows}


def refunded_sums(engine: Engine) -> dict[int, tuple[Decimal, Decimal]]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, amount, amount_refunded FROM payments")).all()
    return {payment_id: (amount, refunded) for payment_id, amount, refunded in rows}


def retry_unanswered(base_url: str, answers: list[RefundAnswer]) -> list[RefundAnswer]:
    """Each keyed call that got no answer or a 503, sent again with its key."""
    retried = []
    with httpx2.Client(base_url=base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
        for answer in answers:
            if answer.call.key is None or answer.status not in (None, 503):
                continue
            response = client.post(
                f"/payments/{answer.call.payment_id}/refunds",
                content=f'{{"amount": "{REFUND}"}}',
                headers=answer.call.headers(),
            )
            retried.append(RefundAnswer(answer.call, response.status_code, response.json(), 0.0))
    return retried


def assert_refunded_once_and_within(
    engine: Engine, answers: list[RefundAnswer], payment_ids: list[int]
) -> None:
    stored = stored_refunds(engine)
    for answer in answers:
        assert answer.status in (None, 201, 409, 422, 503), answer
        if answer.status == 201:
            assert answer.body is not None
            refund_id = answer.body["refund_id"]
            assert isinstance(refund_id, int)
            assert stored[refund_id] == (answer.call.payment_id, Decimal(REFUND)), answer
    for payment_id, (amount, refunded) in refunded_sums(engine).items():
        mine = [a for p, a in stored.values() if p == payment_id]
        assert sum(mine, Decimal(0)) == refunded <= amount, payment_id
    assert {p for p, _ in stored.values()} <= set(payment_ids)
    assert [key for key, count in refunds_by_key(engine).items() if count > 1] == []


def test_killing_the_server_mid_refunds_leaves_every_refund_whole_and_once(
    fault_database: FaultDatabase, tmp_path: Path, observe: Observe
) -> None:
    engine = fault_database.engine
    with running_service(fault_database.service_settings(), tmp_path, workers=WORKERS) as service:
        payment_ids = pay_all(service.base_url, engine)
        load = RefundLoad(service.base_url, payment_ids)
        load.start()
        try:
            wait_until(lambda: load.count(201) >= 30, timeout=60.0, what="refunds before the kill")
            os.killpg(service.pid, signal.SIGKILL)
            time.sleep(0.5)
        finally:
            load.stop()
    wait_for_service_sessions_to_end(engine, fault_database.name)

    with running_service(fault_database.service_settings(), tmp_path, workers=1) as again:
        retried = retry_unanswered(again.base_url, load.answers)

    observe("statuses", dict(Counter(a.status for a in load.answers)))
    observe("retried", dict(Counter(a.status for a in retried)))
    assert load.count(None) > 0, "the kill cut no call"
    assert {a.status for a in retried} <= {201, 409, 422}
    assert_refunded_once_and_within(engine, load.answers + retried, payment_ids)
    assert_verified(fault_database)


def test_a_database_restart_mid_refunds_fails_fast_and_refunds_nothing_twice(
    fault_postgres: RestartablePostgres,
    fault_database: FaultDatabase,
    tmp_path: Path,
    observe: Observe,
) -> None:
    engine = fault_database.engine
    settings = fault_database.service_settings(**SHORT_DEADLINE)
    with running_service(settings, tmp_path, workers=WORKERS) as service:
        payment_ids = pay_all(service.base_url, engine)
        load = RefundLoad(service.base_url, payment_ids)
        load.start()
        try:
            wait_until(lambda: load.count(201) >= 20, timeout=60.0, what="refunds before")
            fault_postgres.stop()
            wait_until(lambda: load.count(503) >= 10, timeout=60.0, what="503s while away")
            fault_postgres.start()
            back = len(load.answers)
            wait_until(
                lambda: any(a.status in (201, 409, 422) for a in load.answers[back:]),
                timeout=60.0,
                what="refunds decided again after the restart",
            )
        finally:
            load.stop()
        retried = retry_unanswered(service.base_url, load.answers)

    observe("statuses", dict(Counter(a.status for a in load.answers)))
    observe("retried", dict(Counter(a.status for a in retried)))
    assert {a.status for a in retried} <= {201, 409, 422}
    assert_refunded_once_and_within(engine, load.answers + retried, payment_ids)
    assert_verified(fault_database)
