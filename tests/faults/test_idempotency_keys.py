"""Idempotency keys against two real server processes: one key sent by many clients at once pays
once, and every other client gets that payment's answer replayed or, as SPEC §3.4 also allows,
409 idempotency_key_in_use, never a second payment; a key reused with another request is
refused; a replayed refusal stays refused (SPEC §3.4)."""

from __future__ import annotations

import ssl
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest

from tests.e2e.checks import assert_problem
from tests.e2e.server import RunningService, running_service
from tests.faults.load import CLIENT_TIMEOUT_SECONDS, PayCall, pay
from tests.faults.observations import Observe
from tests.faults.problems import assert_retry_after
from tests.support.aftermath import (
    FaultDatabase,
    assert_paid_once,
    assert_untouched,
    assert_verified,
    audit_outcomes,
)
from tests.support.orders import add_orders

pytestmark = pytest.mark.faults

WORKERS = 2
CLIENTS = 24


@pytest.fixture(scope="module")
def service(
    module_fault_database: FaultDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    with running_service(
        module_fault_database.service_settings(),
        tmp_path_factory.mktemp("idempotency-service"),
        workers=WORKERS,
    ) as running:
        yield running


@pytest.fixture
def client(service: RunningService) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=service.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
        yield client


def a_key() -> str:
    return f"fault-{uuid.uuid4()}"


def send_together(service: RunningService, calls: list[PayCall]) -> list[httpx2.Response]:
    """Each call from a client of its own, all released at the same moment."""
    start = threading.Barrier(len(calls), timeout=CLIENT_TIMEOUT_SECONDS)
    tls = ssl.create_default_context()  # one for all: building one per client is slow

    def send(call: PayCall) -> httpx2.Response:
        with httpx2.Client(
            base_url=service.base_url, timeout=CLIENT_TIMEOUT_SECONDS, verify=tls
        ) as client:
            start.wait()
            answer = pay(client, call)
        assert answer.response is not None, answer
        return answer.response

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(send, calls))


def test_one_key_sent_by_many_clients_at_once_pays_once_and_replays_the_payment(
    service: RunningService, module_fault_database: FaultDatabase, observe: Observe
) -> None:
    engine = module_fault_database.engine
    [order_id] = add_orders(engine, "73.10")
    call = PayCall(order_id, "73.10", key=a_key())

    responses = send_together(service, [call] * CLIENTS)

    originals = [
        r for r in responses if r.status_code == 200 and "idempotent-replayed" not in r.headers
    ]
    replays = [
        r
        for r in responses
        if r.status_code == 200 and r.headers.get("idempotent-replayed") == "true"
    ]
    in_use = [r for r in responses if r.status_code == 409]
    observe("statuses", dict(Counter(r.status_code for r in responses)))
    observe("original/replays/in_use", f"{len(originals)}/{len(replays)}/{len(in_use)}")
    assert len(originals) + len(replays) + len(in_use) == CLIENTS, [
        (r.status_code, dict(r.headers), r.text) for r in responses
    ]
    assert len(originals) == 1, [(r.status_code, dict(r.headers), r.text) for r in responses]
    [original] = originals
    receipt = original.json()
    assert receipt["order_id"] == order_id
    assert receipt["amount"] == "73.10"
    for replay in replays:
        assert replay.content == original.content  # the first answer, byte for byte
    for refusal in in_use:
        assert_problem(refusal, 409, "idempotency_key_in_use")
        assert_retry_after(refusal)
    assert_paid_once(engine, {order_id: "73.10"}, {order_id: receipt["payment_id"]})
    # Every replay is audited; a refusal for a key in use decided nothing, so left nothing.
    assert Counter(audit_outcomes(engine, order_id)) == Counter(
        {"paid": 1, "replayed": len(replays)}
    )
    assert_verified(module_fault_database)


def test_a_key_reused_with_another_request_is_refused_and_pays_nothing(
    client: httpx2.Client, module_fault_database: FaultDatabase
) -> None:
    engine = module_fault_database.engine
    first, other = add_orders(engine, "40.00", "12.50")
    key = a_key()
    paid = pay(client, PayCall(first, "40.00", key=key))
    assert paid.status == 200, paid

    another_amount = pay(client, PayCall(first, "40.01", key=key))
    another_order = pay(client, PayCall(other, "12.50", key=key))
    same_request_spelt_otherwise = pay(client, PayCall(first, '"40.0"', key=key))

    for reused in (another_amount, another_order):
        assert reused.response is not None, reused
        assert_problem(reused.response, 422, "idempotency_key_reused")
    assert same_request_spelt_otherwise.replayed, same_request_spelt_otherwise
    assert same_request_spelt_otherwise.response is not None
    assert paid.response is not None
    assert same_request_spelt_otherwise.response.content == paid.response.content
    assert_paid_once(engine, {first: "40.00"}, {first: paid.payment_id()})
    assert_untouched(engine, [other])
    assert audit_outcomes(engine, first) == [
        "paid",
        "idempotency_key_reused",
        "replayed",
    ]
    assert audit_outcomes(engine, other) == ["idempotency_key_reused"]
    assert_verified(module_fault_database)


def test_a_replayed_refusal_stays_refused_after_the_order_is_paid(
    client: httpx2.Client, module_fault_database: FaultDatabase
) -> None:
    engine = module_fault_database.engine
    [order_id] = add_orders(engine, "19.99")
    refused_call = PayCall(order_id, "20.00", key=a_key())
    refused = pay(client, refused_call)
    assert refused.response is not None, refused
    assert_problem(refused.response, 422, "amount_mismatch")
    paid = pay(client, PayCall(order_id, "19.99", key=a_key()))
    assert paid.status == 200, paid

    again = pay(client, refused_call)

    assert again.response is not None, again
    assert again.status == 422
    assert again.replayed
    assert again.response.content == refused.response.content
    assert again.response.headers["content-type"] == refused.response.headers["content-type"]
    assert_paid_once(engine, {order_id: "19.99"}, {order_id: paid.payment_id()})
    assert audit_outcomes(engine, order_id) == ["amount_mismatch", "paid", "replayed"]
    assert_verified(module_fault_database)
