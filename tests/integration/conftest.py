"""Fixtures of the integration tests: scratch databases and engines built as the service
builds them."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from payment.adapters.settings import Settings
from payment.adapters.sqlalchemy import migrations
from payment.adapters.sqlalchemy.engine import (
    SessionSettings,
    build_async_engine,
    session_settings,
)
from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
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


@dataclass(frozen=True)
class ServiceEngine:
    """The request path's engine as the service builds it from ``settings``, and its units
    of work."""

    engine: AsyncEngine
    settings: Settings

    @property
    def session(self) -> SessionSettings:
        return session_settings(self.settings)

    def unit_of_work(self) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(self.engine, session=self.session)


def service_settings(url: URL | str, **settings: Any) -> Settings:
    """The service's settings for the database at ``url``, with these besides."""
    text_url = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    return Settings(database_url=SecretStr(text_url), **settings)


def service_engine_on(url: URL | str, **settings: Any) -> ServiceEngine:
    """The service's engine on ``url``, with these settings besides; dispose of it after."""
    built = service_settings(url, **settings)
    return ServiceEngine(build_async_engine(built), built)


@pytest.fixture(params=[False, True], ids=["startup options", "set in each statement"])
async def service_engine(
    clean_database: Engine, request: pytest.FixtureRequest
) -> AsyncIterator[ServiceEngine]:
    """The service's engine on the migrated test database, with a short lock timeout: its
    settings sent once per connection, or with each statement as behind PgBouncer."""
    service = service_engine_on(
        clean_database.url,
        payment_db_lock_timeout_ms=LOCK_TIMEOUT_MS,
        payment_db_pool_size=2,
        payment_db_transaction_pooling=request.param,
    )
    yield service
    await service.engine.dispose()


@pytest.fixture
async def corruptible_service(corruptible_database: Engine) -> AsyncIterator[ServiceEngine]:
    """The service's engine on ``corruptible_database``."""
    service = service_engine_on(corruptible_database.url)
    yield service
    await service.engine.dispose()


@pytest.fixture
async def unreachable_engine() -> AsyncIterator[AsyncEngine]:
    """The service's engine on a port where nothing listens."""
    service = service_engine_on(CLOSED_PORT_URL, payment_db_connect_timeout_seconds=1)
    yield service.engine
    await service.engine.dispose()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that accepts TCP connections and never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]
