"""GET /metrics of the two-worker service (SPEC §2): request counts and latency histograms by
route template, method and status, payments by outcome and the pool's use, summed over the
workers whichever of them is scraped; never an id as a label.

Each worker is made to serve by pausing the other one (SIGSTOP: it accepts no connection
until SIGCONT), so the test knows that both served, and which one answers each scrape."""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import httpx2
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from payment.adapters.settings import Settings
from tests.e2e.checks import Observe, assert_problem, wait_for
from tests.e2e.server import RunningService
from tests.support.orders import add_orders

JSON = {"Content-Type": "application/json"}
WORKERS = 2
"""As the session's ``service`` runs."""
PAYMENTS_PER_WORKER = 10
FIRST_ORDER_ID = 731_000_001
FIRST_PAYMENT_ID = 842_000_001
MISSING_PAYMENT_ID = 987_654_321
MISSING_ORDER_ID = 987_654_322
LABEL_NAMES = {"route", "method", "status", "outcome", "le"}
SETTLE_SECONDS = 10.0
"""A request is counted just after its answer is sent: a scrape may come a moment early."""

Key = tuple[str, tuple[tuple[str, str], ...]]
Samples = dict[Key, float]


def key(name: str, **labels: str) -> Key:
    return name, tuple(sorted(labels.items()))


def request_keys(method: str, route: str, status: int) -> list[Key]:
    """The request counter and the histogram's count and +Inf bucket of one series."""
    labels = {"method": method, "route": route, "status": str(status)}
    return [
        key("payment_http_requests_total", **labels),
        key("payment_http_request_duration_seconds_count", **labels),
        key("payment_http_request_duration_seconds_bucket", **labels, le="+Inf"),
    ]


def scrape(service: RunningService) -> tuple[str, Samples]:
    """The exposition, and its samples by name and labels, on a connection of its own."""
    with httpx2.Client(base_url=service.base_url, timeout=15.0) as client:
        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[key(sample.name, **sample.labels)] = sample.value
    return response.text, samples


def grown(before: Samples, after: Samples, keys: Iterable[Key]) -> Counter[Key]:
    return Counter({k: after.get(k, 0.0) - before.get(k, 0.0) for k in keys})


@contextmanager
def paused(pid: int) -> Iterator[None]:
    """The process stopped for the length of the block: briefly, since the uvicorn master
    replaces a worker that does not answer its health check within 5 s."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def start_ids_at(engine: Engine) -> None:
    """Order and payment ids of nine digits, which no label value or bucket bound can hide."""
    with engine.begin() as connection:
        for table, first in (("orders", FIRST_ORDER_ID), ("payments", FIRST_PAYMENT_ID)):
            connection.execute(
                text("SELECT setval(pg_get_serial_sequence(:table, 'id'), :last)"),
                {"table": table, "last": first - 1},
            )


def assert_labels_are_bounded(samples: Samples) -> None:
    """Label values are templates, methods, statuses, outcomes and bucket bounds: no id."""
    for name, labels in samples:
        if not name.startswith("payment_"):
            continue
        for label, value in labels:
            assert label in LABEL_NAMES, (name, labels)
            if label == "route":
                assert value == "<unmatched>" or value.startswith("/"), (name, labels)
                assert not re.search(r"\d", value), (name, labels)
            elif label == "status":
                assert re.fullmatch(r"[1-5]\d\d", value), (name, labels)
            elif label == "method":
                assert re.fullmatch(r"[A-Z]+|other", value), (name, labels)
            elif label == "outcome":
                assert re.fullmatch(r"[a-z_]+", value), (name, labels)
            else:
                assert value == "+Inf" or float(value) > 0, (name, labels)


def serve_a_share(service: RunningService, order_ids: list[int], totals: list[str]) -> list[int]:
    """Pays the orders and asks for what does not exist; the payment ids."""
    payment_ids: list[int] = []
    with httpx2.Client(base_url=service.base_url, timeout=15.0) as client:
        for order_id, total in zip(order_ids, totals, strict=True):
            body = f'{{"order_id": {order_id}, "amount": "{total}"}}'
            response = client.post("/pay", content=body, headers=JSON)
            assert response.status_code == 200, response.text
            payment_ids.append(response.json()["payment_id"])
        missing = f'{{"order_id": {MISSING_ORDER_ID}, "amount": "1.00"}}'
        assert_problem(client.post("/pay", content=missing, headers=JSON), 404, "order_not_found")
        assert_problem(client.get(f"/payments/{MISSING_PAYMENT_ID}"), 404, "payment_not_found")
        assert_problem(client.get(f"/orders/{MISSING_ORDER_ID}/payments"), 404, "order_not_found")
        assert_problem(client.get(f"/orders/{MISSING_ORDER_ID}"), 404, "not_found")
    return payment_ids


def test_counts_latencies_and_decisions_are_summed_over_both_workers_without_ids(
    service: RunningService, clean_database: Engine, observe: Observe
) -> None:
    start_ids_at(clean_database)  # order and payment ids of nine digits
    totals = [f"{n}.{n:02d}" for n in range(1, WORKERS * PAYMENTS_PER_WORKER + 1)]
    order_ids = add_orders(clean_database, *totals)
    assert order_ids[0] == FIRST_ORDER_ID
    workers = service.worker_pids()
    assert len(workers) == WORKERS, workers
    per_share = {
        **dict.fromkeys(request_keys("POST", "/pay", 200), PAYMENTS_PER_WORKER),
        key("payment_decisions_total", outcome="paid"): PAYMENTS_PER_WORKER,
        **dict.fromkeys(request_keys("POST", "/pay", 404), 1),
        key("payment_decisions_total", outcome="order_not_found"): 1,
        **dict.fromkeys(request_keys("GET", "/payments/{payment_id}", 404), 1),
        **dict.fromkeys(request_keys("GET", "/orders/{order_id}/payments", 404), 1),
        **dict.fromkeys(request_keys("GET", "<unmatched>", 404), 1),
    }
    _, before = scrape(service)

    expected: Counter[Key] = Counter()
    payment_ids: list[int] = []
    for share, other in enumerate(workers[::-1]):
        shared = slice(share * PAYMENTS_PER_WORKER, (share + 1) * PAYMENTS_PER_WORKER)
        with paused(other):
            payment_ids += serve_a_share(service, order_ids[shared], totals[shared])
            expected.update(per_share)
            wait_for(
                lambda: grown(before, scrape(service)[1], per_share) >= expected,
                timeout=SETTLE_SECONDS,
                what=lambda: f"{grown(before, scrape(service)[1], per_share)} of {expected}",
            )
    assert min(payment_ids) >= FIRST_PAYMENT_ID, payment_ids
    views = []
    for serving, other in (workers, workers[::-1]):
        with paused(other):
            views.append((serving, *scrape(service)))
    assert service.worker_pids() == workers, "a worker was replaced while the test paused it"

    pool_size = WORKERS * Settings.model_fields["payment_db_pool_size"].default
    for serving, exposition, after in views:
        assert grown(before, after, per_share) == expected, serving
        assert after[key("payment_db_pool_size")] == pool_size, serving
        assert 0 <= after[key("payment_db_pool_connections_in_use")] <= pool_size
        assert after[key("payment_db_pool_waiting")] >= 0
        assert_labels_are_bounded(after)
        for number in (*order_ids, *payment_ids, MISSING_ORDER_ID, MISSING_PAYMENT_ID):
            assert str(number) not in exposition, number
    observe("workers", len(workers))
    observe("paid_per_worker", PAYMENTS_PER_WORKER)
    observe("paid_counted", expected[key("payment_decisions_total", outcome="paid")])


PROCESS_GAUGES = (
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
)


def test_each_worker_process_and_the_interpreter_are_shown_whichever_worker_answers(
    service: RunningService,
) -> None:
    """process_* of every live worker, labelled by pid, read by the worker answering; the
    garbage collector's counts summed over the workers (each collected once at start-up);
    python_info."""
    workers = service.worker_pids()
    assert len(workers) == WORKERS, workers
    for serving, other in (workers, workers[::-1]):
        with paused(other):
            _, samples = scrape(service)
        shown: dict[str, set[str]] = {}
        for name, labels in samples:
            if name.startswith("process_"):
                shown.setdefault(name, set()).add(dict(labels)["pid"])
        for name in (*PROCESS_GAUGES, "process_cpu_seconds_total"):
            assert shown.get(name) == {str(pid) for pid in workers}, (serving, name, shown)
        for pid in workers:
            assert samples[key("process_resident_memory_bytes", pid=str(pid))] > 1_000_000
            assert samples[key("process_cpu_seconds_total", pid=str(pid))] > 0
        assert samples[key("python_gc_collections_total", generation="2")] >= WORKERS
        assert key("python_gc_objects_collected_total", generation="0") in samples
        assert [labels for name, labels in samples if name == "python_info"] != []
