"""POST /pay reads only what it promises to read (SPEC §2): a JSON body sent as
``application/json``, in UTF-8; numbers that no Decimal holds refused, never a 500; a client
that leaves mid-body an info line, not an error; a database error logged with its cause."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import anyio
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message, Scope

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain.errors import StorageUnavailable
from payment.domain.model import OrderStatus
from payment.entrypoints.http.observe import MULTIPROCESS_DIR_VARIABLE
from tests.unit.fakes import FailingUnitOfWork, pending_order, store_with
from tests.unit.http_support import app_on, assert_problem, client_on, post_pay

ACCESS = "payment.access"
PAY_1 = b'{"order_id": 1, "amount": "10.00"}'
HUGE = "1e99999999999999999999"
"""An exponent no Decimal holds (beyond 10**18)."""


@pytest.fixture(autouse=True)
def one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics of this process alone, not of workers sharing a folder."""
    monkeypatch.delenv(MULTIPROCESS_DIR_VARIABLE, raising=False)


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(pending_order(order_id=1, total="10.00"))


@pytest.fixture
def client(store: InMemoryStore) -> Iterator[TestClient]:
    # raise_server_exceptions: an error that would be a 500 fails the test with its traceback.
    with client_on(lambda: InMemoryUnitOfWork(store)) as client:
        yield client


@pytest.fixture
def captured(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> pytest.LogCaptureFixture:
    # configure_logging stops the service's loggers from propagating; the capture needs it.
    monkeypatch.setattr(logging.getLogger("payment"), "propagate", True)
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_nothing_written(store: InMemoryStore) -> None:
    assert store.orders[1].status == OrderStatus.PENDING
    assert store.payments == {}
    assert store.audit == []
    assert store.idempotency == {}


def post(client: TestClient, body: bytes, headers: list[tuple[str, str]]) -> Any:
    return client.post("/pay", content=body, headers=headers)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([], id="no content type"),
        pytest.param([("Content-Type", "text/plain")], id="text/plain"),
        pytest.param([("Content-Type", "text/plain;charset=UTF-8")], id="text/plain utf-8"),
        pytest.param([("Content-Type", "application/x-www-form-urlencoded")], id="form"),
        pytest.param([("Content-Type", "multipart/form-data; boundary=x")], id="multipart"),
        pytest.param([("Content-Type", "application/json; charset=latin-1")], id="latin-1"),
        pytest.param([("Content-Type", "application/json; charset=utf-16")], id="utf-16"),
        pytest.param([("Content-Type", "application/json; v=1")], id="other parameter"),
        pytest.param([("Content-Type", "application/json; charset")], id="parameter no value"),
        pytest.param([("Content-Type", "application/json; charset =utf-8")], id="space before ="),
        pytest.param([("Content-Type", "application/jsonx")], id="longer subtype"),
        pytest.param([("Content-Type", "application/merge-patch+json")], id="+json"),
        pytest.param([("Content-Type", "application/json, text/plain")], id="a list"),
        pytest.param([("Content-Type", "")], id="empty"),
        pytest.param(
            [("Content-Type", "application/json"), ("Content-Type", "application/json")],
            id="sent twice",
        ),
    ],
)
def test_a_body_not_sent_as_json_is_refused_with_415_and_pays_nothing(
    client: TestClient, store: InMemoryStore, headers: list[tuple[str, str]]
) -> None:
    response = post(client, PAY_1, headers)

    problem = assert_problem(response, 415, "unsupported_media_type")
    assert "application/json" in problem["detail"]
    assert_nothing_written(store)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/json ; charset=utf-8 ;",
        "application/json;",
    ],
)
def test_json_with_at_most_a_utf_8_charset_pays(
    client: TestClient, store: InMemoryStore, content_type: str
) -> None:
    response = post(client, PAY_1, [("Content-Type", content_type)])

    assert response.status_code == 200, response.text
    assert store.orders[1].status == OrderStatus.PAID


def test_the_media_type_is_checked_before_a_byte_of_the_body_is_read(
    store: InMemoryStore,
) -> None:
    app = app_on(lambda: InMemoryUnitOfWork(store))
    sent: list[Message] = []
    reads: list[str] = []

    async def receive() -> Message:
        reads.append("read")
        return {"type": "http.request", "body": PAY_1, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    anyio.run(app, pay_scope([(b"content-type", b"text/plain")]), receive, send)

    assert reads == []
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [415]
    assert_nothing_written(store)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xef\xbb\xbf" + PAY_1, id="utf-8 bom"),
        pytest.param(PAY_1.decode().encode("utf-16"), id="utf-16 bom"),
        pytest.param(PAY_1.decode().encode("utf-16-le"), id="utf-16-le"),
        pytest.param(PAY_1.decode().encode("utf-16-be"), id="utf-16-be"),
        pytest.param(PAY_1.decode().encode("utf-32"), id="utf-32 bom"),
        pytest.param(PAY_1.decode().encode("utf-32-le"), id="utf-32-le"),
        pytest.param(PAY_1.decode().encode("utf-32-be"), id="utf-32-be"),
        pytest.param(b"\xfe\xff" + PAY_1.decode().encode("utf-16-be"), id="utf-16-be bom"),
        pytest.param(PAY_1.replace(b"10.00", b"10.00\xa0"), id="latin-1 byte"),
        pytest.param(PAY_1.replace(b"}", b', "x": "\xed\xa0\x80"}'), id="encoded surrogate"),
        pytest.param(PAY_1.replace(b"}", b', "x": "\xc0\xaf"}'), id="overlong utf-8"),
    ],
)
def test_a_body_that_is_not_utf_8_without_a_byte_order_mark_is_malformed(
    client: TestClient, store: InMemoryStore, body: bytes
) -> None:
    response = post_pay(client, body)

    assert_problem(response, 400, "malformed_request")
    assert_nothing_written(store)


def test_utf_8_beyond_ascii_is_read(client: TestClient, store: InMemoryStore) -> None:
    response = post_pay(client, '{"order_id": 1, "amount": "10.00", "note": "ça"}'.encode())

    # Read, and refused for the unknown member alone: not as malformed.
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"] == [{"pointer": "/note", "detail": "Extra inputs are not permitted"}]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (f'{{"order_id": 1, "amount": {HUGE}}}', "/amount"),
        (f'{{"order_id": 1, "amount": -{HUGE}}}', "/amount"),
        (f'{{"order_id": 1, "amount": 1.5{HUGE.replace("e", "E+")}}}', "/amount"),
        (f'{{"order_id": 1, "amount": {HUGE.replace("e", "e-")}}}', "/amount"),
        ('{"order_id": 1, "amount": 0' + HUGE[1:].replace("e", "e-") + "}", "/amount"),
        (f'{{"order_id": {HUGE}, "amount": 1}}', "/order_id"),
        (f'{{"order_id": {HUGE.replace("e", "e-")}, "amount": 1}}', "/order_id"),
        (f'{{"order_id": 1, "amount": 1, "x": {HUGE}}}', "/x"),
        (f'{{"order_id": 1, "amount": 1, "x": {{"y": [1, {HUGE}]}}}}', "/x"),
        ('{"order_id": 1, "amount": 1e' + "9" * 60_000 + "}", "/amount"),
    ],
)
def test_a_number_no_decimal_holds_is_refused_at_its_member_never_a_500(
    client: TestClient, store: InMemoryStore, body: str, pointer: str
) -> None:
    response = post_pay(client, body)

    problem = assert_problem(response, 422, "validation_error")
    assert [error["pointer"] for error in problem["errors"]] == [pointer]
    assert_nothing_written(store)


def pay_scope(headers: list[tuple[bytes, bytes]]) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/pay",
        "raw_path": b"/pay",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


def requests_counted(app: FastAPI) -> dict[str, float]:
    """POST /pay requests counted so far, by status."""
    exposition = app.state.metrics.exposition().decode()
    return {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "payment_http_requests_total" and sample.labels["route"] == "/pay"
    }


def test_a_client_that_leaves_mid_body_is_one_info_line_with_status_499_never_a_500(
    store: InMemoryStore, captured: pytest.LogCaptureFixture
) -> None:
    app = app_on(lambda: InMemoryUnitOfWork(store))
    arrivals: list[Message] = [
        {"type": "http.request", "body": PAY_1[:10], "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return arrivals.pop(0) if arrivals else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass  # the server drops what is sent to a client that has left

    headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
    anyio.run(app, pay_scope(headers), receive, send)

    records = [record for record in captured.records if record.name.startswith("payment")]
    assert [(record.name, record.levelno) for record in records] == [(ACCESS, logging.INFO)]
    [line] = records
    assert line.__dict__["fields"]["status"] == 499
    assert line.exc_info is None
    assert requests_counted(app) == {"499": 1.0}
    assert_nothing_written(store)


def test_a_database_error_is_logged_with_the_first_line_of_its_cause_and_no_secret(
    captured: pytest.LogCaptureFixture,
) -> None:
    cause = psycopg.OperationalError(
        'connection failed: FATAL:  role "shop" does not exist\n'
        "DETAIL: tried postgresql://shop:s3cr3tpw@db:5432/orders"
    )
    error = StorageUnavailable()
    error.__cause__ = cause
    store = store_with(pending_order(order_id=1, total="10.00"))
    with client_on(lambda: FailingUnitOfWork(store, fails_at="ground", error=error)) as client:
        response = post_pay(client, PAY_1, headers=[("X-Request-ID", "db-error-1")])

    assert_problem(response, 503, "service_unavailable")
    [warning] = [r for r in captured.records if r.levelno == logging.WARNING]
    message = warning.getMessage()
    assert message == (
        'database unavailable: OperationalError: connection failed: FATAL:  role "shop" '
        "does not exist"
    )
    assert warning.__dict__["fields"]["request_id"] == "db-error-1"
    assert "s3cr3tpw" not in json.dumps([r.getMessage() for r in captured.records])
