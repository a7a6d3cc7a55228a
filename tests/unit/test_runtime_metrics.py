"""GET /metrics shows the process and the interpreter as Prometheus's client does by default;
every route is labelled by its template, the documentation's too; the probes and the scrapes
are logged at DEBUG while they succeed."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.entrypoints.http import Services, create_app
from payment.entrypoints.http.observe import MULTIPROCESS_DIR_VARIABLE
from payment.entrypoints.http.runtime_metrics import (
    WorkerProcesses,
    forget_dead_workers,
    live_workers,
)
from tests.unit.fakes import FixedClock, pending_order, store_with
from tests.unit.http_support import PAID_AT, client_on, database_that, post_pay

PROCESS_FAMILIES = {
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_cpu_seconds",
    "process_open_fds",
    "process_max_fds",
}
PYTHON_FAMILIES = {
    "python_info",
    "python_gc_objects_collected",
    "python_gc_objects_uncollectable",
    "python_gc_collections",
}
ACCESS = "payment.access"


@pytest.fixture(autouse=True)
def one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROCESS_DIR_VARIABLE, raising=False)


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(pending_order(order_id=1, total="10.00"))


@pytest.fixture
def client(store: InMemoryStore) -> Iterator[TestClient]:
    with client_on(lambda: InMemoryUnitOfWork(store)) as client:
        yield client


def families(client: TestClient) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(response.text)
    }


def test_the_process_and_the_interpreter_are_shown(client: TestClient) -> None:
    shown = families(client)

    assert set(shown) >= PROCESS_FAMILIES | PYTHON_FAMILIES
    [(_, _, resident)] = shown["process_resident_memory_bytes"]
    assert resident > 1_000_000
    [(_, info, _)] = shown["python_info"]
    assert info["implementation"] == "CPython"
    assert info["major"] == str(sys.version_info.major)
    generations = {labels["generation"] for _, labels, _ in shown["python_gc_collections"]}
    assert generations == {"0", "1", "2"}


def requests_by_route(client: TestClient) -> dict[tuple[str, str], float]:
    return {
        (labels["route"], labels["status"]): value
        for name, labels, value in families(client)["payment_http_requests"]
        if name == "payment_http_requests_total"
    }


def test_the_documentation_is_counted_under_its_own_routes(client: TestClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui.css"):
        assert client.get(path).status_code == 200
    assert client.get("/docs/assets/nothing.js").status_code == 404

    counted = requests_by_route(client)
    for route in ("/docs", "/redoc", "/openapi.json", "/docs/assets/{name}"):
        assert counted[(route, "200")] == 1, route
    assert counted[("/docs/assets/{name}", "404")] == 1
    assert ("<unmatched>", "200") not in counted


def test_a_request_refused_before_routing_is_counted_under_its_route(store: InMemoryStore) -> None:
    services = Services(
        unit_of_work=lambda: InMemoryUnitOfWork(store),
        clock=FixedClock(PAID_AT),
        database_ready=database_that(answers=True),
        max_requests_in_flight=0,  # every request but the probes and the scrapes is shed
    )
    with TestClient(create_app(services)) as client:
        assert client.get("/docs").status_code == 503
        assert client.get("/docs/assets/redoc.standalone.js").status_code == 503
        assert post_pay(client, '{"order_id": 1, "amount": "10.00"}').status_code == 503
        counted = requests_by_route(client)

    assert counted[("/docs", "503")] == 1
    assert counted[("/docs/assets/{name}", "503")] == 1
    assert counted[("/pay", "503")] == 1


def access_levels(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, int]]:
    return [
        (vars(r)["fields"]["path"], r.levelname, vars(r)["fields"]["status"])
        for r in caplog.records
        if r.name == ACCESS
    ]


@pytest.fixture
def caplog_all(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> pytest.LogCaptureFixture:
    # configure_logging stops the service's loggers from propagating; the capture needs it.
    monkeypatch.setattr(logging.getLogger("payment"), "propagate", True)
    caplog.set_level(logging.DEBUG)
    return caplog


def test_the_probes_and_the_scrapes_are_logged_at_debug_the_rest_at_info(
    client: TestClient, caplog_all: pytest.LogCaptureFixture
) -> None:
    for path in ("/livez", "/readyz", "/metrics", "/docs"):
        client.get(path)
    post_pay(client, '{"order_id": 1, "amount": "10.00"}')

    assert access_levels(caplog_all) == [
        ("/livez", "DEBUG", 200),
        ("/readyz", "DEBUG", 200),
        ("/metrics", "DEBUG", 200),
        ("/docs", "INFO", 200),
        ("/pay", "INFO", 200),
    ]


def test_a_failing_probe_is_logged_at_info(
    store: InMemoryStore, caplog_all: pytest.LogCaptureFixture
) -> None:
    unready = database_that(answers=False)
    with client_on(lambda: InMemoryUnitOfWork(store), database_ready=unready) as client:
        assert client.get("/readyz").status_code == 503

    assert access_levels(caplog_all) == [("/readyz", "INFO", 503)]


def test_at_info_the_probes_and_the_scrapes_write_nothing(
    client: TestClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger("payment"), "propagate", True)
    caplog.set_level(logging.INFO)
    for path in ("/livez", "/readyz", "/metrics"):
        client.get(path)

    assert access_levels(caplog) == []


def ended_process() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_the_workers_are_the_live_children_of_this_ones_parent(tmp_path: Path) -> None:
    """The folder names the pids that wrote to it; a process gone, or one that is not a worker
    beside this one (its parent), is left out."""
    me, gone, parent = os.getpid(), ended_process(), os.getppid()
    for pid in (me, gone, parent):
        (tmp_path / f"counter_{pid}.db").touch()
        (tmp_path / f"gauge_livesum_{pid}.db").touch()
    (tmp_path / "notes.txt").touch()

    assert live_workers(str(tmp_path)) == [me]
    shown = {
        family.name: {sample.labels["pid"] for sample in family.samples}
        for family in WorkerProcesses(str(tmp_path)).collect()
    }
    assert set(shown) == PROCESS_FAMILIES
    assert all(pids == {str(me)} for pids in shown.values())


def test_the_live_gauges_of_a_worker_gone_are_dropped_its_counts_kept(tmp_path: Path) -> None:
    me, gone = os.getpid(), ended_process()
    kinds = ("counter", "histogram", "gauge_livesum", "gauge_liveall")
    for pid in (me, gone):
        for kind in kinds:
            (tmp_path / f"{kind}_{pid}.db").touch()

    forget_dead_workers(str(tmp_path))

    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [
            f"counter_{gone}.db",
            f"histogram_{gone}.db",
            *(
                f"{kind}_{me}.db"
                for kind in ("counter", "histogram", "gauge_livesum", "gauge_liveall")
            ),
        ]
    )
