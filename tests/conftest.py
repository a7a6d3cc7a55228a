"""Fixtures shared by every layer of tests.

Database fixtures start one embedded PostgreSQL for the whole run (or use TEST_DATABASE_URL,
a server on which the tests may create databases). A test that uses any of them is marked
``database`` automatically, so ``pytest -m database`` runs exactly those.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from payment.adapters.settings import Settings
from payment.adapters.sqlalchemy import migrations
from payment.adapters.sqlalchemy.engine import build_async_engine
from tests.support.databases import DatabaseServer
from tests.support.observations import Observe

DATABASE_FIXTURES = {
    "postgres_server",
    "database_url",
    "engine",
    "clean_database",
    "async_engine",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.database)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[DatabaseServer]:
    """TEST_DATABASE_URL's server, or an embedded one that lives as long as the run."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield DatabaseServer.from_url(configured)
        return
    from payment.adapters.embedded_postgres import EmbeddedPostgres

    # A folder of its own, not pytest's numbered ones that a concurrent run may prune; and a
    # short path, since the server's Unix socket lives in it.
    data_dir = Path(tempfile.mkdtemp(prefix="payment-pg-"))
    server = EmbeddedPostgres(data_dir, keep_data=False)
    try:
        yield DatabaseServer(server.url())
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(postgres_server: DatabaseServer) -> Iterator[URL]:
    """A database of this run's own, migrated to the latest revision."""
    with postgres_server.scratch() as url:
        migrations.upgrade(url)
        yield url


@pytest.fixture(scope="session")
def engine(database_url: URL) -> Iterator[Engine]:
    engine = create_engine(database_url, pool_size=20, max_overflow=10)
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(database_url: URL) -> AsyncIterator[AsyncEngine]:
    """The request path's engine on the test database, configured as the service builds it
    (autocommit, no pre-ping), made in the test's own event loop and disposed after it."""
    engine = build_async_engine(
        Settings(
            database_url=SecretStr(database_url.render_as_string(hide_password=False)),
            payment_db_pool_size=20,
        )
    )
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests (``pytest.mark.anyio``) run on asyncio, as the service does."""
    return "asyncio"


@pytest.fixture
def clean_database(engine: Engine) -> Engine:
    """The migrated database, emptied before the test: each test starts from nothing."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "TRUNCATE outbox_events, payment_attempts, idempotency_keys, payments, orders"
                " RESTART IDENTITY CASCADE"
            )
        )
    return engine


@pytest.fixture
def observe(request: pytest.FixtureRequest) -> Observe:
    """Note a fact the test observed (counts, timings); listed in the run's summary."""

    def note(name: str, value: object) -> None:
        request.node.user_properties.append((name, value))

    return note


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What the tests observed, for the record of the run."""
    reports = [
        report
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", None) == "call" and report.user_properties
    ]
    if not reports:
        return
    terminalreporter.section("observations")
    for report in reports:
        facts = ", ".join(f"{name}={value}" for name, value in report.user_properties)
        terminalreporter.write_line(f"{report.nodeid.split('::')[-1]}: {facts}")
