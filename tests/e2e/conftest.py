"""The service under test: real `payment-service serve` processes over the run's database."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from tests.e2e.secured import KeyedService, new_api_key, with_password
from tests.e2e.server import RunningService, running_service

WORKERS = 2
UNREACHABLE_DATABASE_URL = "postgresql://postgres@127.0.0.1:1/none"


def _connects(url: str) -> bool:
    engine = create_engine(url, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as connection:
            answer: int = connection.execute(text("SELECT 1")).scalar_one()
    finally:
        engine.dispose()
    return answer == 1


@pytest.fixture(scope="session")
def service(
    database_url: URL, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    """The service with two worker processes on the run's migrated database."""
    rendered = database_url.render_as_string(hide_password=False)
    assert _connects(rendered), "the rendered DATABASE_URL does not reach the test database"
    with running_service(
        {"DATABASE_URL": rendered},
        tmp_path_factory.mktemp("service"),
        workers=WORKERS,
    ) as running:
        yield running


@pytest.fixture
def client(service: RunningService) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=service.base_url, timeout=15.0) as client:
        yield client


@pytest.fixture(scope="module")
def service_without_database(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningService]:
    """The service pointed at a port where no database listens."""
    with running_service(
        {
            "DATABASE_URL": UNREACHABLE_DATABASE_URL,
            "PAYMENT_DB_CONNECT_TIMEOUT_SECONDS": "1",
        },
        tmp_path_factory.mktemp("service-without-database"),
        probe="/livez",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def keyed_service(
    database_url: URL, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KeyedService]:
    """One worker on the run's database, reached with a password in DATABASE_URL, that asks
    for one of two API keys, configured with spaces around them."""
    url, password = with_password(database_url)
    rendered = url.render_as_string(hide_password=False)
    assert _connects(rendered), "the test database refuses the URL with a password"
    keys = (new_api_key("one"), new_api_key("two"))
    with running_service(
        {"DATABASE_URL": rendered, "PAYMENT_API_KEYS": f" {keys[0]} , {keys[1]} "},
        tmp_path_factory.mktemp("keyed-service"),
    ) as running:
        yield KeyedService(service=running, keys=keys, database_password=password)
