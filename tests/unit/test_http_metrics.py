"""GET /metrics (SPEC §2): requests and latency by route template, method and status;
decisions by outcome; the database pool's use. Never an id as a label."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.adapters.sqlalchemy.engine import PoolStatus
from payment.entrypoints.http.auth import ApiKeys
from payment.entrypoints.http.observe import MULTIPROCESS_DIR_VARIABLE, UNMATCHED_ROUTE
from tests.unit.fakes import BrokenUnitOfWork, pending_order, store_with
from tests.unit.http_support import client_on, post_pay

REQUESTS = "payment_http_requests_total"
LATENCY_COUNT = "payment_http_request_duration_seconds_count"
LATENCY_BUCKET = "payment_http_request_duration_seconds_bucket"
DECISIONS = "payment_decisions_total"
PAY_1 = '{"order_id": 1, "amount": "10.00"}'


@pytest.fixture(autouse=True)
def one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics of this process alone, not of workers sharing a folder."""
    monkeypatch.delenv(MULTIPROCESS_DIR_VARIABLE, raising=False)


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(
        pending_order(order_id=1, total="10.00"),
        pending_order(order_id=2, total="20.00"),
        pending_order(order_id=3, total="30.00"),
    )


@pytest.fixture
def client(store: InMemoryStore) -> Iterator[TestClient]:
    with client_on(lambda: InMemoryUnitOfWork(store)) as client:
        yield client


class Scrape:
    """One GET /metrics, read with the Prometheus parser."""

    def __init__(self, client: TestClient) -> None:
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        self.text = response.text
        self.samples = [
            sample
            for family in text_string_to_metric_families(self.text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; 0 when there is none yet."""
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) <= 1
        return found[0] if found else 0.0

    def label_values(self, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if label in s.labels}


def test_requests_are_counted_by_route_template_method_and_status(client: TestClient) -> None:
    before = Scrape(client)

    for _ in range(3):
        post_pay(client, '{"order_id": 99, "amount": 1}')
    post_pay(client, PAY_1)
    post_pay(client, "[1]")

    after = Scrape(client)
    for status, count in (("404", 3), ("200", 1), ("400", 1)):
        counted = after.value(REQUESTS, route="/pay", method="POST", status=status)
        assert counted - before.value(REQUESTS, route="/pay", method="POST", status=status) == count


def test_latency_is_observed_once_per_request(client: TestClient) -> None:
    labels = {"route": "/pay", "method": "POST", "status": "404"}
    before = Scrape(client)

    post_pay(client, '{"order_id": 99, "amount": 1}')
    post_pay(client, '{"order_id": 98, "amount": 1}')

    after = Scrape(client)
    assert after.value(LATENCY_COUNT, **labels) - before.value(LATENCY_COUNT, **labels) == 2
    assert after.value(LATENCY_BUCKET, **labels, le="+Inf") == after.value(LATENCY_COUNT, **labels)


def test_the_metrics_scrape_counts_itself_after_answering(client: TestClient) -> None:
    first = Scrape(client)
    second = Scrape(client)

    labels = {"route": "/metrics", "method": "GET", "status": "200"}
    assert second.value(REQUESTS, **labels) == first.value(REQUESTS, **labels) + 1


def test_a_read_is_counted_under_its_template_never_its_id(client: TestClient) -> None:
    post_pay(client, PAY_1)

    client.get("/payments/1")
    client.get("/payments/987654")
    client.get("/orders/3/payments")
    client.get("/orders/876543/payments")

    scrape = Scrape(client)
    template = "/payments/{payment_id}"
    assert scrape.value(REQUESTS, route=template, method="GET", status="200") == 1
    assert scrape.value(REQUESTS, route=template, method="GET", status="404") == 1
    listed = "/orders/{order_id}/payments"
    assert scrape.value(REQUESTS, route=listed, method="GET", status="200") == 1
    assert scrape.value(REQUESTS, route=listed, method="GET", status="404") == 1
    assert "987654" not in scrape.text
    assert "876543" not in scrape.text
    assert scrape.label_values("route") <= {"/pay", template, listed, "/metrics"}


def test_a_path_no_route_matches_is_counted_as_unmatched(client: TestClient) -> None:
    client.get("/nowhere/12345")
    client.get("/orders/12345/refunds")

    scrape = Scrape(client)
    assert scrape.value(REQUESTS, route=UNMATCHED_ROUTE, method="GET", status="404") == 2
    assert "12345" not in scrape.text
    assert "nowhere" not in scrape.text


def test_made_up_methods_are_counted_together_as_other(client: TestClient) -> None:
    for method in ("FOO1", "FOO2", "BREW"):
        client.request(method, "/nowhere")
    client.request("FOO3", "/pay")

    scrape = Scrape(client)
    assert scrape.value(REQUESTS, route=UNMATCHED_ROUTE, method="other", status="404") == 3
    assert scrape.value(REQUESTS, route="/pay", method="other", status="405") == 1
    assert scrape.label_values("method") <= {"GET", "POST", "other"}


def test_a_method_the_route_does_not_allow_is_counted_under_the_route(client: TestClient) -> None:
    client.get("/pay")

    assert Scrape(client).value(REQUESTS, route="/pay", method="GET", status="405") == 1


@pytest.mark.parametrize(
    ("bodies", "outcome", "count"),
    [
        ([PAY_1], "paid", 1),
        ([PAY_1, PAY_1, PAY_1], "order_not_payable", 2),
        (['{"order_id": 2, "amount": "19.99"}'] * 2, "amount_mismatch", 2),
        (['{"order_id": 99, "amount": 1}'], "order_not_found", 1),
    ],
    ids=["paid", "not-payable", "mismatch", "not-found"],
)
def test_decisions_are_counted_by_outcome(
    client: TestClient, bodies: list[str], outcome: str, count: int
) -> None:
    before = Scrape(client)

    for body in bodies:
        post_pay(client, body)

    after = Scrape(client)
    assert after.value(DECISIONS, outcome=outcome) - before.value(DECISIONS, outcome=outcome) == (
        count
    )


def test_a_replay_and_a_refusal_before_any_decision_count_as_such(client: TestClient) -> None:
    key = [("Idempotency-Key", "checkout-1")]
    post_pay(client, PAY_1, headers=key)
    post_pay(client, PAY_1, headers=key)
    post_pay(client, '{"order_id": 2, "amount": "20.00"}', headers=key)
    post_pay(client, '{"order_id": 0, "amount": "20.00"}')

    scrape = Scrape(client)
    assert scrape.value(DECISIONS, outcome="paid") == 1
    assert scrape.value(DECISIONS, outcome="replayed") == 1
    assert scrape.value(DECISIONS, outcome="idempotency_key_reused") == 1
    assert scrape.label_values("outcome") == {"paid", "replayed", "idempotency_key_reused"}


@dataclass
class FakePool:
    """What the pool reports; a test changes it between scrapes."""

    status: PoolStatus

    def __call__(self) -> PoolStatus:
        return self.status


def test_the_pool_gauges_show_the_pools_latest_report(store: InMemoryStore) -> None:
    pool = FakePool(PoolStatus(size=10, in_use=3, waiting=1))

    with client_on(lambda: InMemoryUnitOfWork(store), pool_report=pool) as client:
        first = Scrape(client)
        pool.status = PoolStatus(size=10, in_use=7, waiting=0)
        second = Scrape(client)

    assert first.value("payment_db_pool_size") == 10
    assert first.value("payment_db_pool_connections_in_use") == 3
    assert first.value("payment_db_pool_waiting") == 1
    assert second.value("payment_db_pool_connections_in_use") == 7
    assert second.value("payment_db_pool_waiting") == 0


def test_two_applications_in_one_process_keep_their_own_metrics(store: InMemoryStore) -> None:
    with (
        client_on(lambda: InMemoryUnitOfWork(store)) as busy,
        client_on(lambda: InMemoryUnitOfWork(store)) as idle,
    ):
        post_pay(busy, PAY_1)
        busy_scrape, idle_scrape = Scrape(busy), Scrape(idle)

    assert busy_scrape.value(REQUESTS, route="/pay", method="POST", status="200") == 1
    assert busy_scrape.value(DECISIONS, outcome="paid") == 1
    assert idle_scrape.value(REQUESTS, route="/pay", method="POST", status="200") == 0
    assert idle_scrape.value(DECISIONS, outcome="paid") == 0


def test_the_metrics_need_no_key_and_count_refused_requests(store: InMemoryStore) -> None:
    keys = ApiKeys(["shop-a-0123456789abcdef"])

    with client_on(lambda: InMemoryUnitOfWork(store), api_keys=keys) as client:
        post_pay(client, PAY_1)
        scrape = Scrape(client)

    refused = [s for s in scrape.samples if s.name == REQUESTS and s.labels["status"] == "401"]
    assert [(s.labels["route"], s.labels["method"], s.value) for s in refused] == [
        ("/pay", "POST", 1)
    ]
    assert scrape.value(DECISIONS, outcome="paid") == 0


def test_an_unexpected_failure_is_counted_as_a_500_under_its_template() -> None:
    with client_on(BrokenUnitOfWork, raise_server_exceptions=False) as client:
        failed = client.get("/payments/1")
        scrape = Scrape(client)

    assert failed.status_code == 500
    assert scrape.value(REQUESTS, route="/payments/{payment_id}", method="GET", status="500") == 1
