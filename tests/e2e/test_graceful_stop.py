"""SIGTERM to a serving server (SPEC §3.3, and the graceful stop of the HTTP entry point):
requests in flight finish, new ones are refused with 503 or find the port closed, every 200
stands for a committed payment with its audit record, and the process exits within the
configured bound, even when a request is stuck.

What uvicorn does on SIGTERM, as these tests observe it: the application marks itself stopping
at once (new requests get 503 with ``Connection: close``, /readyz 503); within 0.1 s uvicorn
stops listening (one worker: the port refuses; several: the master still holds the socket, so a
connection waits unaccepted and is reset when the master exits), closes every idle keep-alive
connection, and lets the requests in flight finish, for up to PAYMENT_SHUTDOWN_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from tests.e2e.checks import Observe, assert_problem, wait_for
from tests.e2e.raw_http import ClosedBeforeResponse, RawConnection
from tests.e2e.server import RunningService, running_service
from tests.support.aftermath import (
    FaultDatabase,
    assert_paid_once,
    assert_untouched,
    assert_verified,
    payments_by_order,
)
from tests.support.orders import add_orders, broken_invariants

JSON = {"Content-Type": "application/json"}
SHUTDOWN_TIMEOUT_SECONDS = 5
EXIT_MARGIN_SECONDS = 10.0
"""On top of the shutdown timeout: start-up of the stop, lifespan shutdown, a noisy machine."""
LANES = 3
KEYED_LANES = 1
CALLS_PER_LANE = 300
PAID_BEFORE_STOP = 30
CLIENT_TIMEOUT_SECONDS = 30.0
"""Far above any bound here: an answer this late is a hang."""
LOCK_WAIT_MS = "30000"
"""The service's lock and statement timeouts, and its request deadline, while a test holds an
order's row lock."""
STOP_EXIT_STATUSES = {0, -signal.SIGTERM}
"""Several workers: the master returns 0. One worker: uvicorn re-raises the SIGTERM it caught
once it has shut down, so the process ends by that signal."""


@dataclass(frozen=True, slots=True)
class Call:
    order_id: int
    amount: str
    key: str | None = None

    def content(self) -> bytes:
        return f'{{"order_id": {self.order_id}, "amount": "{self.amount}"}}'.encode()

    def headers(self) -> dict[str, str]:
        return JSON if self.key is None else {**JSON, "Idempotency-Key": self.key}


@dataclass(frozen=True, slots=True)
class Result:
    """A whole response, or ``error`` when none came. ``sent_at`` is taken before the request
    leaves, on the ``time.monotonic()`` clock."""

    call: Call | None
    sent_at: float
    response: httpx2.Response | None
    error: httpx2.TransportError | None = None
    in_body: bool = False
    """The error came after the status line and headers: a truncated response."""

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status_code

    @property
    def refused(self) -> bool:
        return isinstance(self.error, httpx2.ConnectError)


def send(client: httpx2.Client, method: str, path: str, call: Call | None = None) -> Result:
    """One request, telling an error before the response from one in the middle of it."""
    sent_at = time.monotonic()
    in_body = False
    try:
        with client.stream(
            method,
            path,
            content=None if call is None else call.content(),
            headers=None if call is None else call.headers(),
        ) as response:
            in_body = True
            response.read()
    except httpx2.TransportError as error:
        return Result(call, sent_at, None, error, in_body)
    return Result(call, sent_at, response)


def complaint(result: Result) -> str | None:
    """What is wrong with ``result``, if anything: a complete 200 (a payment, or the probe's
    ready), a complete 503 service_unavailable with Retry-After, or a connection refused or
    closed before any byte of a response are right; anything else is wrong."""
    if result.response is None:
        if isinstance(result.error, httpx2.TimeoutException):
            return f"no answer within {CLIENT_TIMEOUT_SECONDS} s: {result.error!r}"
        if result.in_body:
            return f"a truncated response: {result.error!r}"
        return None
    if result.status == 200:
        return None
    if result.status == 503:
        try:
            assert_problem(result.response, 503, "service_unavailable")
        except AssertionError as error:
            return f"a 503 that is not the service_unavailable problem: {error}"
        if not result.response.headers.get("retry-after", "").isdigit():
            return f"a 503 without Retry-After: {result.response.headers}"
        return None
    return f"status {result.status}: {result.response.text}"


class Traffic:
    """Payment lanes and one /readyz prober, each a thread on a keep-alive client of its
    own, sending until its connection is refused (the server is gone), or told to stop."""

    def __init__(self, base_url: str, lanes: list[list[Call]]) -> None:
        self._base_url = base_url
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.payments: list[list[Result]] = [[] for _ in lanes]
        self.probes: list[Result] = []
        self._failures: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._pay, args=(calls, self.payments[n]), daemon=True)
            for n, calls in enumerate(lanes)
        ]
        self._threads.append(threading.Thread(target=self._probe, daemon=True))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def paid(self) -> int:
        with self._lock:
            return sum(1 for lane in self.payments for r in lane if r.status == 200)

    def stop(self) -> None:
        self._stopping.set()
        self.join(CLIENT_TIMEOUT_SECONDS + 10)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not [t for t in self._threads if t.is_alive()], f"traffic still runs {timeout} s on"
        assert not self._failures, self._failures

    def _client(self) -> httpx2.Client:
        return httpx2.Client(base_url=self._base_url, timeout=CLIENT_TIMEOUT_SECONDS)

    def _pay(self, calls: list[Call], results: list[Result]) -> None:
        try:
            with self._client() as client:
                for call in calls:
                    if self._stopping.is_set():
                        return
                    result = send(client, "POST", "/pay", call)
                    with self._lock:
                        results.append(result)
                    if result.refused:
                        return
        except BaseException as error:  # reported by join(), not lost in the thread
            self._failures.append(error)

    def _probe(self) -> None:
        try:
            with self._client() as client:
                while not self._stopping.is_set():
                    result = send(client, "GET", "/readyz")
                    with self._lock:
                        self.probes.append(result)
                    if result.refused:
                        return
                    self._stopping.wait(0.002)
        except BaseException as error:
            self._failures.append(error)


def lanes_of(order_ids: list[int], totals: dict[int, str]) -> list[list[Call]]:
    lanes: list[list[Call]] = [[] for _ in range(LANES)]
    for position, order_id in enumerate(order_ids):
        lane = position % LANES
        key = f"stop-{order_id}" if lane < KEYED_LANES else None
        lanes[lane].append(Call(order_id, totals[order_id], key))
    return lanes


def database_of(url: URL, engine: Engine) -> FaultDatabase:
    return FaultDatabase(name=url.database or "", url=url, engine=engine)


def metrics_folder(service: RunningService) -> Path:
    """The folder the workers share their metrics in, from a worker's environment."""
    [worker, *_] = service.worker_pids()
    environment = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    [folder] = [v for v in environment if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return Path(folder.partition(b"=")[2].decode())


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stop_under_load_loses_no_answered_payment_and_exits_in_time(
    database_url: URL, clean_database: Engine, tmp_path: Path, observe: Observe, workers: int
) -> None:
    amounts = [f"{1 + n // 100}.{n % 100:02d}" for n in range(LANES * CALLS_PER_LANE)]
    order_ids = add_orders(clean_database, *amounts)
    totals = dict(zip(order_ids, amounts, strict=True))
    settings = {
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "PAYMENT_SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_TIMEOUT_SECONDS),
    }

    with running_service(settings, tmp_path, workers=workers) as service:
        folder = metrics_folder(service) if workers > 1 else None
        traffic = Traffic(service.base_url, lanes_of(order_ids, totals))
        traffic.start()
        try:
            wait_for(
                lambda: traffic.paid() >= PAID_BEFORE_STOP,
                timeout=60.0,
                what=lambda: f"{PAID_BEFORE_STOP} payments before the stop\n{service.output()}",
            )
            os.kill(service.pid, signal.SIGTERM)
            stopped_at = time.monotonic()
            status = service.wait_for_exit(SHUTDOWN_TIMEOUT_SECONDS + EXIT_MARGIN_SECONDS)
            exit_seconds = time.monotonic() - stopped_at
            traffic.join(CLIENT_TIMEOUT_SECONDS + 10)
        finally:
            traffic.stop()
        output = service.output()

    results = [r for lane in traffic.payments for r in lane]
    observe("exit_seconds", round(exit_seconds, 2))
    observe("exit_status", status)
    observe("payments", dict(Counter(r.status for r in results)))
    observe(
        "paid_after_stop", sum(1 for r in results if r.status == 200 and r.sent_at > stopped_at)
    )
    observe("unanswered", dict(Counter(type(r.error).__name__ for r in results if r.error)))
    observe("readyz", dict(Counter(r.status for r in traffic.probes)))
    assert status in STOP_EXIT_STATUSES, output
    wrong = [(r, why) for r in [*results, *traffic.probes] if (why := complaint(r))]
    assert not wrong, (wrong, output)
    assert all(lane and lane[-1].refused for lane in traffic.payments), (
        "a lane never saw the port closed"
    )
    refusals = [r.response for r in results if r.response is not None and r.status == 503]
    assert all(r.headers.get("connection") == "close" for r in refusals), refusals
    assert traffic.probes
    assert traffic.probes[-1].refused, traffic.probes[-1]
    if workers == 1:
        # The one process has the signal before it reads anything sent after it: no new
        # payment, no "ready".
        late = [r for r in [*results, *traffic.probes] if r.sent_at > stopped_at]
        assert not [r for r in late if r.status == 200], output
    if folder is not None:
        assert not folder.exists(), f"the metrics folder {folder} outlived the server"

    engine = clean_database
    answered = {r.call.order_id: r for r in results if r.call and r.response is not None}
    paid = {
        o: r.response.json()["payment_id"]
        for o, r in answered.items()
        if r.status == 200 and r.response
    }
    assert_paid_once(engine, totals, paid)
    assert_untouched(engine, [o for o, r in answered.items() if r.status == 503])
    unanswered = [r.call.order_id for r in results if r.call and r.response is None]
    stored = payments_by_order(engine, unanswered)
    assert_paid_once(engine, totals, {o: p[0].id for o, p in stored.items() if p})
    assert_untouched(engine, [o for o, p in stored.items() if not p])
    tried = {r.call.order_id for r in results if r.call}
    assert_untouched(engine, [o for o in order_ids if o not in tried])
    assert_verified(database_of(database_url, engine))  # as an operator would, after a stop


@contextmanager
def row_locked(engine: Engine, order_id: int) -> Iterator[None]:
    """The order's row locked by the test until the block ends, so a payment of it waits."""
    with engine.connect() as connection, connection.begin() as transaction:
        connection.execute(
            text("SELECT id FROM orders WHERE id = :id FOR UPDATE"), {"id": order_id}
        )
        try:
            yield
        finally:
            transaction.rollback()


def service_sessions(engine: Engine, condition: str) -> int:
    """How many sessions of a payment service on the test's database meet ``condition``
    (the session's service, also on this database, keeps idle ones in its pool)."""
    with engine.connect() as connection:
        count: int = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                f" AND application_name = 'payment-service' AND {condition}"
            )
        ).scalar_one()
    return count


def waiting_on_a_lock(engine: Engine) -> bool:
    return service_sessions(engine, "wait_event_type = 'Lock'") > 0


def no_session_at_work(engine: Engine) -> bool:
    """No service session runs a statement or holds a transaction open: the work of a server
    that is gone is over (its backend ends once it finds its client gone)."""
    return service_sessions(engine, "state <> 'idle'") == 0


class InFlight:
    """One payment sent from a thread of its own."""

    def __init__(self, service: RunningService, call: Call) -> None:
        self._result: list[Result] = []
        self._thread = threading.Thread(target=self._run, args=(service, call), daemon=True)
        self._thread.start()

    def _run(self, service: RunningService, call: Call) -> None:
        with httpx2.Client(base_url=service.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
            self._result.append(send(client, "POST", "/pay", call))

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float) -> Result:
        self._thread.join(timeout)
        assert self._result, f"the payment in flight got nothing in {timeout} s"
        return self._result[0]


def refuses_connections(service: RunningService) -> bool:
    try:
        with RawConnection(service.address, timeout=2.0):
            return False
    except ConnectionRefusedError:
        return True


def held_settings(database_url: URL, shutdown_timeout: int) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "PAYMENT_SHUTDOWN_TIMEOUT_SECONDS": str(shutdown_timeout),
        "PAYMENT_DB_LOCK_TIMEOUT_MS": LOCK_WAIT_MS,
        "PAYMENT_DB_STATEMENT_TIMEOUT_MS": LOCK_WAIT_MS,
        "PAYMENT_REQUEST_DEADLINE_MS": LOCK_WAIT_MS,
    }


def test_a_payment_in_flight_finishes_while_the_stopping_server_takes_nothing_new(
    database_url: URL, clean_database: Engine, tmp_path: Path, observe: Observe
) -> None:
    (order_id,) = add_orders(clean_database, "25.00")
    settings = held_settings(database_url, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS)

    with running_service(settings, tmp_path) as service, RawConnection(service.address) as idle:
        assert idle.request("GET", "/livez").status == 200  # now an idle keep-alive connection
        with row_locked(clean_database, order_id):
            in_flight = InFlight(service, Call(order_id, "25.00"))
            wait_for(lambda: waiting_on_a_lock(clean_database), timeout=10.0, what=service.output)
            os.kill(service.pid, signal.SIGTERM)
            stopped_at = time.monotonic()
            try:
                readyz = idle.request("GET", "/readyz")
            except ClosedBeforeResponse:
                readyz = None
            # /readyz is answered on the open connection only until uvicorn starts its
            # shutdown (at most 0.1 s after the signal), which closes idle connections: it
            # answers 503, or the connection is closed with no answer; never 200.
            if readyz is not None:
                assert readyz.status == 503, readyz
                assert readyz.json()["code"] == "service_unavailable"
                assert readyz.headers["retry-after"].isdigit()
                idle.settimeout(5.0)
                assert idle.closed_by_server(), "the idle connection stayed open"
            wait_for(lambda: refuses_connections(service), timeout=5.0, what=service.output)
            assert not in_flight.done, "the payment in flight ended before the lock was released"
            assert service.process is not None
            assert service.process.poll() is None, "the server did not wait for the payment"
            held_seconds = time.monotonic() - stopped_at
        result = in_flight.result(timeout=10.0)
        status = service.wait_for_exit(SHUTDOWN_TIMEOUT_SECONDS + EXIT_MARGIN_SECONDS)
        exit_seconds = time.monotonic() - stopped_at

    observe("readyz_after_stop", "closed" if readyz is None else readyz.status)
    observe("held_seconds", round(held_seconds, 2))
    observe("exit_seconds", round(exit_seconds, 2))
    assert result.response is not None, result
    assert result.status == 200, result.response.text
    assert result.response.headers["connection"] == "close"
    assert status in STOP_EXIT_STATUSES
    assert_paid_once(
        clean_database, {order_id: "25.00"}, {order_id: result.response.json()["payment_id"]}
    )
    assert broken_invariants(clean_database) == []


def test_a_payment_stuck_past_the_shutdown_timeout_is_cut_and_the_server_exits_in_time(
    database_url: URL, clean_database: Engine, tmp_path: Path, observe: Observe
) -> None:
    (order_id,) = add_orders(clean_database, "25.00")
    shutdown_timeout = 2
    settings = held_settings(database_url, shutdown_timeout=shutdown_timeout)

    with running_service(settings, tmp_path) as service:
        with row_locked(clean_database, order_id):
            in_flight = InFlight(service, Call(order_id, "25.00"))
            wait_for(lambda: waiting_on_a_lock(clean_database), timeout=10.0, what=service.output)
            os.kill(service.pid, signal.SIGTERM)
            stopped_at = time.monotonic()
            status = service.wait_for_exit(shutdown_timeout + EXIT_MARGIN_SECONDS)
            exit_seconds = time.monotonic() - stopped_at
            result = in_flight.result(timeout=10.0)
        output = service.output()
    wait_for(lambda: no_session_at_work(clean_database), timeout=30.0, what=lambda: output)

    observe("exit_seconds", round(exit_seconds, 2))
    assert exit_seconds >= shutdown_timeout * 0.9, "the server did not wait for the payment"
    assert status in STOP_EXIT_STATUSES, output
    # Cut, never paid, and answered as a problem: a 503 that invites a keyed retry.
    assert result.response is not None, result
    assert result.status == 503, result
    assert result.response.headers["content-type"] == "application/problem+json", result
    assert result.response.json()["code"] == "service_unavailable", result
    assert result.response.headers["retry-after"], result
    assert not result.in_body, result
    observe("answer", result.status if result.response is not None else repr(result.error))
    assert_untouched(clean_database, [order_id])
    assert broken_invariants(clean_database) == []
