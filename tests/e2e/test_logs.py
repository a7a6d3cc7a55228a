"""What the server writes (SPEC §3.7): one JSON object per line; one line per request on
``payment.access`` and one per decision on ``payment.decisions``, both with the request id;
never the database password nor an API key."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine

from tests.e2e.checks import assert_problem, log_lines, wait_for
from tests.e2e.secured import MADE_UP_PASSWORD, KeyedService, bearer
from tests.e2e.server import RunningService, running_service
from tests.support.orders import add_orders

JSON = {"Content-Type": "application/json"}
LOG_SECONDS = 10.0


@pytest.fixture
def client(keyed_service: KeyedService) -> Iterator[httpx2.Client]:
    key, _ = keyed_service.keys
    with httpx2.Client(
        base_url=keyed_service.service.base_url, headers=bearer(key), timeout=15.0
    ) as client:
        yield client


def lines_of(service: RunningService, logger: str, request_id: str) -> list[dict[str, Any]]:
    return [
        line
        for line in log_lines(service.output())
        if line.get("logger") == logger and line.get("request_id") == request_id
    ]


def fence(client: httpx2.Client, service: RunningService) -> None:
    """Until the line of a request made now is written: every line of the requests before it
    on this one-worker server is written by then."""
    request_id = f"e2e-fence-{uuid.uuid4().hex}"
    assert client.get("/livez", headers={"X-Request-ID": request_id}).status_code == 200
    wait_for(
        lambda: bool(lines_of(service, "payment.access", request_id)),
        timeout=LOG_SECONDS,
        what=service.output,
    )


def assert_nothing_secret(output: str, secrets: tuple[str, ...]) -> None:
    for secret in secrets:
        assert secret not in output, "a secret is in the server's output"


def test_a_payment_leaves_one_access_line_and_one_decision_line_with_its_request_id(
    client: httpx2.Client, keyed_service: KeyedService, clean_database: Engine
) -> None:
    service = keyed_service.service
    (order_id,) = add_orders(clean_database, "42.00")
    request_id = f"e2e-log-{uuid.uuid4()}"

    response = client.post(
        "/pay",
        content=f'{{"order_id": {order_id}, "amount": 42.00}}',
        headers={**JSON, "X-Request-ID": request_id},
    )
    fence(client, service)

    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id
    [access] = lines_of(service, "payment.access", request_id)
    assert access["route"] == "/pay"
    assert access["path"] == "/pay"
    assert access["method"] == "POST"
    assert access["status"] == 200
    assert access["outcome"] == "paid"
    duration = access["duration_ms"]
    assert isinstance(duration, int | float), access
    assert not isinstance(duration, bool), access
    assert 0 <= duration < 60_000, access
    assert access["caller"].startswith("key-"), access
    [decision] = lines_of(service, "payment.decisions", request_id)
    assert decision["outcome"] == "paid"
    assert decision["status"] == 200
    assert decision["order_id"] == order_id
    assert decision["payment_id"] == response.json()["payment_id"]
    assert decision["caller"] == access["caller"]
    assert {access["level"], decision["level"]} == {"info"}


def test_refusals_leave_an_access_line_each_and_no_decision_line(
    client: httpx2.Client, keyed_service: KeyedService, clean_database: Engine
) -> None:
    service = keyed_service.service
    (order_id,) = add_orders(clean_database, "42.00")
    refusals = {
        f"e2e-log-{uuid.uuid4()}": refusal
        for refusal in [
            (401, "unauthorized", {"Authorization": "Bearer nope"}),
            (422, "validation_error", {}),
            (413, "payload_too_large", {}),
        ]
    }
    bodies = {
        401: f'{{"order_id": {order_id}, "amount": 42.00}}',
        422: f'{{"order_id": {order_id}, "amount": NaN}}',
        413: " " * (64 * 1024 + 1),
    }

    for request_id, (status, code, headers) in refusals.items():
        response = client.post(
            "/pay", content=bodies[status], headers={**JSON, **headers, "X-Request-ID": request_id}
        )
        extra = frozenset({"errors"}) if status == 422 else frozenset()
        assert_problem(response, status, code, extra=extra)
    fence(client, service)

    for request_id, (status, _, _) in refusals.items():
        [access] = lines_of(service, "payment.access", request_id)
        assert (access["route"], access["path"], access["status"]) == ("/pay", "/pay", status)
        assert lines_of(service, "payment.decisions", request_id) == []


def test_every_line_is_json_and_none_shows_a_secret(
    client: httpx2.Client, keyed_service: KeyedService, clean_database: Engine
) -> None:
    (order_id,) = add_orders(clean_database, "7.00")
    assert (
        client.post(
            "/pay", content=f'{{"order_id": {order_id}, "amount": "7.00"}}', headers=JSON
        ).status_code
        == 200
    )
    fence(client, keyed_service.service)

    output = keyed_service.service.output()

    lines = log_lines(output)
    assert len(lines) >= 3, output
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines), output
    assert_nothing_secret(output, keyed_service.secrets)


@pytest.fixture(scope="module")
def unreachable_with_password(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningService, str]]:
    """The service pointed, with a password, at a port where no database listens: the
    connection errors it meets must not carry the password into its output."""
    password = f"{MADE_UP_PASSWORD}-{uuid.uuid4().hex[:8]}"
    with running_service(
        {
            "DATABASE_URL": f"postgresql://payment:{password}@127.0.0.1:1/none",
            "PAYMENT_DB_CONNECT_TIMEOUT_SECONDS": "1",
        },
        tmp_path_factory.mktemp("unreachable-with-password"),
        probe="/livez",
    ) as running:
        yield running, password


def test_database_errors_are_logged_as_json_without_the_password(
    unreachable_with_password: tuple[RunningService, str],
) -> None:
    service, password = unreachable_with_password
    request_id = f"e2e-log-{uuid.uuid4()}"
    with httpx2.Client(base_url=service.base_url, timeout=30.0) as client:
        response = client.post(
            "/pay",
            content=b'{"order_id": 1, "amount": 1.00}',
            headers={**JSON, "X-Request-ID": request_id},
        )
        assert_problem(response, 503, "service_unavailable")
        assert_problem(client.get("/readyz"), 503, "service_unavailable")
        fence(client, service)

    output = service.output()
    warnings = [
        line
        for line in log_lines(output)
        if line["level"] == "warning" and line.get("request_id") == request_id
    ]
    assert warnings, output
    assert_nothing_secret(output, (password,))
