"""Fixtures of the integration tests: scratch databases and engines built as the service
builds them."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from payment.adapters.settings import Settings
from payment.adapters.sqlalchemy import migrations
from payment.adapters.sqlalchemy.engine import build_engine
from tests.support.databases import DatabaseServer

CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:1/none"
LOCK_TIMEOUT_MS = 200


@pytest.fixture
def scratch_url(postgres_server: DatabaseServer) -> Iterator[URL]:
    """A new, empty database, dropped after the test."""
    with postgres_server.scratch("payment_it") as url:
        yield url


@pytest.fixture
def scratch_engine(scratch_url: URL) -> Iterator[Engine]:
    engine = create_engine(scratch_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def corruptible_url(postgres_server: DatabaseServer) -> Iterator[URL]:
    """A migrated database apart from the run's shared one, for rows the service would never
    write: the shared one stays sound for the tests that do not empty it first."""
    with postgres_server.scratch("payment_corrupt") as url:
        migrations.upgrade(url)
        yield url


@pytest.fixture
def corruptible_database(corruptible_url: URL) -> Iterator[Engine]:
    """``corruptible_url``, emptied before the test."""
    engine = create_engine(corruptible_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(
            text(
                "TRUNCATE payment_attempts, idempotency_keys, payments, orders"
                " RESTART IDENTITY CASCADE"
            )
        )
    yield engine
    engine.dispose()


@pytest.fixture(params=[False, True], ids=["startup options", "set in each transaction"])
def service_engine(clean_database: Engine, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The service's own engine on the migrated test database, with a short lock timeout: its
    settings sent once per connection, or in each transaction as behind PgBouncer."""
    url = clean_database.url.render_as_string(hide_password=False)
    engine = build_engine(
        Settings(
            database_url=SecretStr(url),
            payment_db_lock_timeout_ms=LOCK_TIMEOUT_MS,
            payment_db_pool_size=2,
            payment_db_transaction_pooling=request.param,
        )
    )
    yield engine
    engine.dispose()


@pytest.fixture
def unreachable_engine() -> Iterator[Engine]:
    """The service's engine on a port where nothing listens."""
    engine = build_engine(
        Settings(database_url=SecretStr(CLOSED_PORT_URL), payment_db_connect_timeout_seconds=1)
    )
    yield engine
    engine.dispose()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that accepts TCP connections and never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]
