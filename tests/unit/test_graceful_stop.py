"""Stopping: once the process is told to stop, /readyz says so and no new request reaches a
transaction; the probes and the metrics still answer."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain.model import OrderStatus
from payment.entrypoints.http import Services, create_app
from payment.entrypoints.http.auth import ApiKeys
from payment.entrypoints.http.lifecycle import STOP_SIGNALS, Lifecycle
from tests.unit.fakes import FixedClock, pending_order, store_with
from tests.unit.http_support import app_on, assert_problem, database_that, post_pay

PAY_1 = '{"order_id": 1, "amount": "10.00"}'
KEY = "shop-a-0123456789abcdef"


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(pending_order(order_id=1, total="10.00"), pending_order(2, "20.00"))


@pytest.fixture
def app(store: InMemoryStore) -> FastAPI:
    return app_on(lambda: InMemoryUnitOfWork(store))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def stop(app: FastAPI) -> None:
    lifecycle: Lifecycle = app.state.lifecycle
    lifecycle.stop()


def assert_refused_while_stopping(response: Any) -> None:
    problem = assert_problem(response, 503, "service_unavailable")
    assert "shutting down" in problem["detail"]
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["connection"] == "close"


def test_a_payment_while_stopping_is_a_503_that_writes_nothing(
    app: FastAPI, client: TestClient, store: InMemoryStore
) -> None:
    stop(app)

    response = post_pay(client, PAY_1, headers=[("Idempotency-Key", "k1")])

    assert_refused_while_stopping(response)
    assert store.payments == {}
    assert store.audit == []
    assert store.idempotency == {}
    assert store.orders[1].status == OrderStatus.PENDING


def test_a_payment_before_stopping_is_served_as_usual(
    app: FastAPI, client: TestClient, store: InMemoryStore
) -> None:
    assert post_pay(client, PAY_1).status_code == 200

    stop(app)

    assert_refused_while_stopping(client.get("/payments/1"))
    assert store.orders[1].status == OrderStatus.PAID


@pytest.mark.parametrize(
    "path", ["/payments/1", "/orders/1/payments", "/openapi.json", "/docs", "/nowhere"]
)
def test_reads_while_stopping_are_503(app: FastAPI, client: TestClient, path: str) -> None:
    stop(app)

    assert_refused_while_stopping(client.get(path))


def test_the_stop_answer_carries_the_request_id(app: FastAPI, client: TestClient) -> None:
    stop(app)

    response = client.get("/payments/1", headers={"X-Request-ID": "trace-stop"})

    assert response.headers["x-request-id"] == "trace-stop"


def test_readiness_fails_while_stopping_saying_why(app: FastAPI, client: TestClient) -> None:
    assert client.get("/readyz").status_code == 200

    stop(app)

    response = client.get("/readyz")
    problem = assert_problem(response, 503, "service_unavailable")
    assert "shutting down" in problem["detail"]
    assert "retry-after" in response.headers


@pytest.mark.parametrize("path", ["/livez", "/metrics"])
def test_liveness_and_metrics_still_answer_while_stopping(
    app: FastAPI, client: TestClient, path: str
) -> None:
    stop(app)

    response = client.get(path)

    assert response.status_code == 200
    assert response.headers.get("connection") != "close"


def test_stopping_is_answered_before_asking_for_a_key(store: InMemoryStore) -> None:
    app = app_on(lambda: InMemoryUnitOfWork(store), api_keys=ApiKeys([KEY]))
    with TestClient(app) as client:
        stop(app)
        anonymous = post_pay(client, PAY_1)
        with_key = post_pay(client, PAY_1, headers=[("Authorization", f"Bearer {KEY}")])

    assert_refused_while_stopping(anonymous)
    assert_refused_while_stopping(with_key)
    assert store.payments == {}


def test_the_server_stopping_the_application_marks_it_stopping(app: FastAPI) -> None:
    lifecycle: Lifecycle = app.state.lifecycle
    with TestClient(app):
        assert not lifecycle.stopping

    assert lifecycle.stopping


def test_the_shutdown_hook_runs_when_the_server_stops(store: InMemoryStore) -> None:
    calls: list[str] = []

    async def dispose() -> None:
        calls.append("disposed")

    app = create_app(
        Services(
            unit_of_work=lambda: InMemoryUnitOfWork(store),
            clock=FixedClock(),
            database_ready=database_that(answers=True),
        ),
        on_shutdown=dispose,
    )

    with TestClient(app):
        assert calls == []

    assert calls == ["disposed"]


# Signals


Handler = Callable[[int, FrameType | None], Any] | int | None


@pytest.fixture
def original_handlers() -> Iterator[None]:
    """The stop signals' handlers, put back after the test whatever it installed."""
    saved: dict[signal.Signals, Handler] = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


class RecordingHandler:
    """A signal handler that only remembers it was called."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, FrameType | None]] = []

    def __call__(self, number: int, frame: FrameType | None) -> None:
        self.calls.append((number, frame))


@pytest.mark.usefixtures("original_handlers")
@pytest.mark.parametrize("stop_signal", STOP_SIGNALS, ids=lambda s: s.name)
def test_a_stop_signal_marks_the_process_stopping_then_runs_the_servers_handler(
    stop_signal: signal.Signals,
) -> None:
    assert threading.current_thread() is threading.main_thread()
    servers = {sig: RecordingHandler() for sig in STOP_SIGNALS}
    for sig, handler in servers.items():
        signal.signal(sig, handler)
    lifecycle = Lifecycle()

    lifecycle.watch_stop_signals()
    installed = signal.getsignal(stop_signal)
    assert callable(installed)
    assert installed is not servers[stop_signal]
    installed(stop_signal, None)

    assert lifecycle.stopping
    assert servers[stop_signal].calls == [(stop_signal, None)]
    assert all(handler.calls == [] for sig, handler in servers.items() if sig is not stop_signal)


@pytest.mark.usefixtures("original_handlers")
def test_a_stop_signal_with_no_handler_before_only_marks_the_process_stopping() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    lifecycle = Lifecycle()

    lifecycle.watch_stop_signals()
    installed = signal.getsignal(signal.SIGTERM)
    assert callable(installed)
    installed(signal.SIGTERM, None)

    assert lifecycle.stopping


@pytest.mark.usefixtures("original_handlers")
def test_off_the_main_thread_no_signal_handler_is_installed() -> None:
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    lifecycle = Lifecycle()
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            lifecycle.watch_stop_signals()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=watch)
    thread.start()
    thread.join(timeout=10)

    assert errors == []
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before
    assert not lifecycle.stopping
