"""Probes, metrics and load shedding against a real server process (SPEC §3.6): beyond its
maximum of requests in progress a worker answers 503 at once while the probes and the metrics
still answer; on a database that never answers, /readyz is bounded by its own timeout, a
payment by the request deadline, and /livez and /metrics do not wait at all."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx2
from sqlalchemy import Engine, bindparam, text
from sqlalchemy.engine import URL

from tests.e2e.checks import Observe, assert_problem
from tests.e2e.server import running_service
from tests.support.orders import add_orders

JSON = {"Content-Type": "application/json"}
SLACK = 0.7
"""What a busy machine may add to a bound before a test calls it broken."""
FAST = 0.1
"""/livez's bound, whatever the database does."""
PATIENCE = 30.0


def pay(client: httpx2.Client, order_id: int, amount: str) -> tuple[httpx2.Response, float]:
    started = time.monotonic()
    response = client.post(
        "/pay", content=f'{{"order_id": {order_id}, "amount": "{amount}"}}', headers=JSON
    )
    return response, time.monotonic() - started


def pay_alone(base_url: str, order_id: int, amount: str) -> httpx2.Response:
    """A payment from a client of its own."""
    with httpx2.Client(base_url=base_url, timeout=PATIENCE) as client:
        response, _ = pay(client, order_id, amount)
    return response


def timed_get(client: httpx2.Client, path: str) -> tuple[httpx2.Response, float]:
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


def assert_retry_later(response: httpx2.Response) -> None:
    assert_problem(response, 503, "service_unavailable")
    assert int(response.headers["retry-after"]) >= 1


@contextmanager
def rows_locked(engine: Engine, order_ids: list[int]) -> Iterator[None]:
    with engine.connect() as connection, connection.begin() as transaction:
        connection.execute(
            text("SELECT id FROM orders WHERE id IN :ids FOR UPDATE").bindparams(
                bindparam("ids", expanding=True)
            ),
            {"ids": order_ids},
        )
        try:
            yield
        finally:
            transaction.rollback()


def waiting_on_a_lock(engine: Engine) -> int:
    with engine.connect() as connection:
        waiting: int = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'payment-service' AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return waiting


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"not within {PATIENCE} s: {what}"
        time.sleep(0.05)


def shed_total(client: httpx2.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("payment_http_requests_shed_total "):
            return float(line.split()[1])
    raise AssertionError("no payment_http_requests_shed_total in /metrics")


def test_a_request_beyond_the_limit_in_progress_is_answered_503_at_once_and_probes_still_answer(
    database_url: URL, clean_database: Engine, tmp_path: Path, observe: Observe
) -> None:
    held_a, held_b, free = add_orders(clean_database, "11.00", "12.00", "13.00")
    settings = {
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "PAYMENT_MAX_REQUESTS_IN_FLIGHT": "2",
        "PAYMENT_DB_LOCK_TIMEOUT_MS": "20000",
        "PAYMENT_DB_STATEMENT_TIMEOUT_MS": "20000",
        "PAYMENT_REQUEST_DEADLINE_MS": "20000",
    }
    with (
        running_service(settings, tmp_path) as service,
        httpx2.Client(base_url=service.base_url, timeout=PATIENCE) as client,
        ThreadPoolExecutor(max_workers=2) as clients,
    ):
        with rows_locked(clean_database, [held_a, held_b]):
            held = [
                clients.submit(pay_alone, service.base_url, order_id, amount)
                for order_id, amount in ((held_a, "11.00"), (held_b, "12.00"))
            ]
            wait_until(lambda: waiting_on_a_lock(clean_database) == 2, "two payments in progress")
            refused, refused_took = pay(client, free, "13.00")
            probes = {path: timed_get(client, path) for path in ("/livez", "/readyz", "/metrics")}
            shed = shed_total(client)
        answers = [future.result(timeout=PATIENCE) for future in held]
        paid, _ = pay(client, free, "13.00")

    observe("refused_in", f"{refused_took * 1000:.1f} ms")
    assert_retry_later(refused)
    assert refused_took < SLACK
    for path, (response, took) in probes.items():
        assert response.status_code == 200, (path, response.text)
        assert took < SLACK, (path, took)
    assert shed == 1
    assert [answer.status_code for answer in answers] == [200, 200]
    assert paid.status_code == 200, paid.text


@contextmanager
def silent_database() -> Iterator[int]:
    """A port that takes TCP connections and never says a word: a database that hangs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(256)
        yield listener.getsockname()[1]


def livez_timings(client: httpx2.Client, stop: threading.Event) -> list[float]:
    timings: list[float] = []
    while not stop.is_set():
        response, took = timed_get(client, "/livez")
        assert response.status_code == 200
        timings.append(took)
        stop.wait(0.02)
    return timings


def test_on_a_database_that_never_answers_readyz_and_pay_are_bounded_and_livez_does_not_wait(
    tmp_path: Path, observe: Observe
) -> None:
    ready_timeout, deadline = 0.3, 0.5
    paths = ["/readyz"] * 8 + ["/pay"] * 6 + ["/metrics"]
    with silent_database() as port:
        settings = {
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/none",
            "PAYMENT_DB_CONNECT_TIMEOUT_SECONDS": "10",
            "PAYMENT_DB_POOL_TIMEOUT_SECONDS": "10",
            "PAYMENT_READY_TIMEOUT_MS": str(int(ready_timeout * 1000)),
            "PAYMENT_REQUEST_DEADLINE_MS": str(int(deadline * 1000)),
        }
        with running_service(settings, tmp_path, probe="/livez") as service, ExitStack() as stack:
            # Every client made (and connected) beforehand: making one costs the test's
            # process tens of milliseconds, which would count against /livez.
            tls = ssl.create_default_context()
            clients = [
                stack.enter_context(
                    httpx2.Client(base_url=service.base_url, timeout=PATIENCE, verify=tls)
                )
                for _ in range(len(paths) + 1)
            ]
            for client in clients:
                client.get("/livez")
            workers = stack.enter_context(ThreadPoolExecutor(max_workers=len(clients)))
            stop = threading.Event()
            livez = workers.submit(livez_timings, clients[-1], stop)

            def ask(client: httpx2.Client, path: str) -> tuple[httpx2.Response, float]:
                if path == "/pay":
                    return pay(client, 1, "10.00")
                return timed_get(client, path)

            answers = list(workers.map(ask, clients, paths))
            time.sleep(0.2)
            stop.set()
            livez_took = livez.result(timeout=PATIENCE)

    took_by_path: dict[str, list[float]] = {}
    for path, (_, took) in zip(paths, answers, strict=True):
        took_by_path.setdefault(path, []).append(took)
    observe("livez", f"{len(livez_took)} asked, max {max(livez_took) * 1000:.1f} ms")
    observe("readyz_max", f"{max(took_by_path['/readyz']):.3f}s")
    observe("pay_max", f"{max(took_by_path['/pay']):.3f}s")
    for path, (response, took) in zip(paths, answers, strict=True):
        if path == "/metrics":
            assert response.status_code == 200
            assert took < SLACK
            continue
        assert_retry_later(response)
        bound = ready_timeout if path == "/readyz" else deadline
        assert took < bound + SLACK, (path, took)
    assert len(livez_took) >= 5, livez_took
    assert max(livez_took) < FAST, livez_took
