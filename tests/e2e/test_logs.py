"""What the server writes (SPEC §3.7): one JSON object per line; one line per request, on
``payment.access`` with the request id, which for a payment attempt that reached a decision also
carries the decision (outcome, order, claimed amount, payment, idempotency key); never the
database password nor an API key."""

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
ACCESS = "payment.access"
DECISION_FIELDS = ("order_id", "claimed_amount", "payment_id", "idempotency_key")
"""On the access line of a payment attempt that reached a decision, beside its ``outcome``."""
MISSING_ORDER_ID = 987_654_321


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


def the_line_of(service: RunningService, request_id: str) -> dict[str, Any]:
    """The one line the request left, whatever its logger: its access line."""
    lines = [line for line in log_lines(service.output()) if line.get("request_id") == request_id]
    assert len(lines) == 1, lines
    [line] = lines
    assert line["logger"] == ACCESS, line
    assert line["level"] == "info", line
    return line


def fence(client: httpx2.Client, service: RunningService) -> None:
    """Until the line of a request made now is written: every line of the requests before it
    on this one-worker server is written by then. Not a probe: its line is at DEBUG."""
    request_id = f"e2e-fence-{uuid.uuid4().hex}"
    assert client.get("/nowhere", headers={"X-Request-ID": request_id}).status_code in {401, 404}
    wait_for(
        lambda: bool(lines_of(service, ACCESS, request_id)),
        timeout=LOG_SECONDS,
        what=service.output,
    )


def assert_nothing_secret(output: str, secrets: tuple[str, ...]) -> None:
    for secret in secrets:
        assert secret not in output, "a secret is in the server's output"


def test_a_payment_leaves_one_line_the_access_line_with_its_decision_and_request_id(
    client: httpx2.Client, keyed_service: KeyedService, clean_database: Engine
) -> None:
    service = keyed_service.service
    (order_id,) = add_orders(clean_database, "42.00")
    request_id = f"e2e-log-{uuid.uuid4()}"
    key = f"e2e-log-key-{uuid.uuid4().hex}"

    response = client.post(
        "/pay",
        content=f'{{"order_id": {order_id}, "amount": 42.00}}',
        headers={**JSON, "X-Request-ID": request_id, "Idempotency-Key": key},
    )
    fence(client, service)

    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id
    line = the_line_of(service, request_id)
    assert line["route"] == "/pay"
    assert line["path"] == "/pay"
    assert line["method"] == "POST"
    assert line["status"] == 200
    duration = line["duration_ms"]
    assert isinstance(duration, int | float), line
    assert not isinstance(duration, bool), line
    assert 0 <= duration < 60_000, line
    assert line["caller"].startswith("key-"), line
    assert line["outcome"] == "paid"
    assert line["order_id"] == order_id
    assert line["claimed_amount"] == "42.00"
    assert line["payment_id"] == response.json()["payment_id"]
    assert line["idempotency_key"] == key


def test_every_decision_is_on_the_one_line_of_its_request(
    client: httpx2.Client, keyed_service: KeyedService, clean_database: Engine
) -> None:
    service = keyed_service.service
    paid, other = add_orders(clean_database, "42.00", "10.00")
    key = f"e2e-log-key-{uuid.uuid4().hex}"
    # Each attempt, in this order: what it sends, and the decision its line must carry
    # (status, outcome, order, claimed amount, idempotency key; the payment made is checked
    # apart).
    attempts: list[tuple[int, str, str | None, int, str]] = [
        (paid, "42.00", key, 200, "paid"),
        (paid, "42.00", key, 200, "replayed"),
        (other, "10.00", key, 422, "idempotency_key_reused"),
        (paid, "42.00", None, 409, "order_not_payable"),
        (other, "10.01", None, 422, "amount_mismatch"),
        (MISSING_ORDER_ID, "1.00", None, 404, "order_not_found"),
    ]
    sent: list[tuple[str, httpx2.Response]] = []
    for order_id, amount, idempotency_key, _, _ in attempts:
        request_id = f"e2e-log-{uuid.uuid4()}"
        keyed = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        response = client.post(
            "/pay",
            content=f'{{"order_id": {order_id}, "amount": "{amount}"}}',
            headers={**JSON, **keyed, "X-Request-ID": request_id},
        )
        sent.append((request_id, response))
    fence(client, service)

    payment_id = sent[0][1].json()["payment_id"]
    for (order_id, amount, idempotency_key, status, outcome), (request_id, response) in zip(
        attempts, sent, strict=True
    ):
        assert response.status_code == status, (outcome, response.text)
        line = the_line_of(service, request_id)
        assert (line["route"], line["method"], line["status"]) == ("/pay", "POST", status), line
        assert line["outcome"] == outcome, line
        assert line["order_id"] == order_id, line
        assert line["claimed_amount"] == amount, line
        assert line["idempotency_key"] == idempotency_key, line
        # Only the attempt that made the payment names it: a replay made none.
        assert line["payment_id"] == (payment_id if outcome == "paid" else None), line
    assert sent[1][1].headers["idempotent-replayed"] == "true"


def test_refusals_at_the_door_leave_their_access_line_alone_without_a_decision(
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
        line = the_line_of(service, request_id)
        assert (line["route"], line["path"], line["status"]) == ("/pay", "/pay", status)
        assert line["outcome"] is None, line
        assert not [field for field in DECISION_FIELDS if field in line], line


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
    # The attempt reached no decision: its access line says 503, and carries none.
    [access] = lines_of(service, ACCESS, request_id)
    assert (access["status"], access["outcome"]) == (503, None), access
    assert_nothing_secret(output, (password,))
