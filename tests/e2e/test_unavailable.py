"""The service whose database cannot be reached: it serves, says it is not ready, and refuses
payments fast with 503 (SPEC §2, §3.6)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx2
import pytest

from tests.e2e.checks import assert_problem
from tests.e2e.server import RunningService

FAIL_FAST_BOUND_SECONDS = 10.0
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client_without_database(service_without_database: RunningService) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=service_without_database.base_url, timeout=60.0) as client:
        yield client


def assert_retry_after(response: httpx2.Response) -> None:
    retry_after = response.headers.get("retry-after", "")
    assert retry_after.isdigit(), response.headers
    assert int(retry_after) >= 1


def test_service_starts_and_is_live_without_its_database(
    client_without_database: httpx2.Client,
) -> None:
    response = client_without_database.get("/livez")

    assert response.status_code == 200


def test_service_is_not_ready_without_its_database(client_without_database: httpx2.Client) -> None:
    response = client_without_database.get("/readyz")

    assert_problem(response, 503, "service_unavailable")
    assert_retry_after(response)


def test_payment_without_the_database_fails_fast_with_service_unavailable(
    client_without_database: httpx2.Client,
) -> None:
    started = time.monotonic()
    response = client_without_database.post(
        "/pay", content=b'{"order_id": 1, "amount": 199.99}', headers=JSON
    )
    elapsed = time.monotonic() - started

    assert_problem(response, 503, "service_unavailable")
    assert_retry_after(response)
    assert elapsed < FAIL_FAST_BOUND_SECONDS


def test_invalid_payment_is_refused_without_the_database(
    client_without_database: httpx2.Client,
) -> None:
    response = client_without_database.post(
        "/pay", content=b'{"order_id": 1, "amount": NaN}', headers=JSON
    )

    assert_problem(response, 422, "validation_error", extra=frozenset({"errors"}))
