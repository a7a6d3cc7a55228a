"""Fault injection against real server processes and a PostgreSQL of the tests' own.

These tests stop and start their PostgreSQL, so they never use the run's shared server
(TEST_DATABASE_URL or the session's embedded one) nor its fixtures: they start an embedded
server of their own in a private temporary folder, and give each test a new database on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from payment.adapters.sqlalchemy import migrations
from tests.faults.observations import Observe
from tests.support.aftermath import FaultDatabase
from tests.support.restartable_postgres import RestartablePostgres


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "faults: fault injection with real server processes and a PostgreSQL of its own",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What each fault test saw (counts, timings), for the record of the run."""
    reports = [
        report
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", None) == "call"
        and "tests/faults/" in report.nodeid
        and report.user_properties
    ]
    if not reports:
        return
    terminalreporter.section("fault injection: observations")
    for report in reports:
        facts = ", ".join(f"{name}={value}" for name, value in report.user_properties)
        terminalreporter.write_line(f"{report.nodeid.split('::')[-1]}: {facts}")


@pytest.fixture(scope="session")
def fault_postgres() -> Iterator[RestartablePostgres]:
    """A PostgreSQL the tests may stop and start, in a short private folder (its socket lives
    there), removed at the end of the run."""
    with RestartablePostgres.in_new_folder(prefix="payment-fault-") as postgres:
        yield postgres


@contextmanager
def _migrated_database(postgres: RestartablePostgres) -> Iterator[FaultDatabase]:
    name = f"payment_fault_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(name)
    migrations.upgrade(url)
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})
    try:
        yield FaultDatabase(name=name, url=url, engine=engine)
    finally:
        engine.dispose()
        postgres.ensure_running()  # the test may have stopped it, and failed before restarting
        postgres.drop_database(name)


@pytest.fixture
def fault_database(fault_postgres: RestartablePostgres) -> Iterator[FaultDatabase]:
    """A new migrated database for one test; the server is running again after the test."""
    with _migrated_database(fault_postgres) as database:
        yield database


@pytest.fixture(scope="module")
def module_fault_database(fault_postgres: RestartablePostgres) -> Iterator[FaultDatabase]:
    """A new migrated database shared by the tests of one module (none of which stops the
    server)."""
    with _migrated_database(fault_postgres) as database:
        yield database


@pytest.fixture
def observe(request: pytest.FixtureRequest) -> Observe:
    """Note a fact the test observed; listed in the run's summary."""

    def note(name: str, value: object) -> None:
        request.node.user_properties.append((name, value))

    return note
