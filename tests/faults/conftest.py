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
from tests.support.aftermath import FaultDatabase
from tests.support.restartable_postgres import RestartablePostgres


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "faults: fault injection with real server processes and a PostgreSQL of its own",
    )


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
