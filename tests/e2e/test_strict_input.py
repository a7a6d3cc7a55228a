"""Strict input and safe logs, seen from the wire (SPEC §2, §3.5, §3.7): POST /pay reads only a
JSON body sent as ``application/json`` in UTF-8; a number no Decimal holds is a 422, not a 500,
and the connection goes on; a client that leaves mid-body is one info line; a path can neither
forge a log line nor reach a terminal raw, in either format; a database error is logged with
its cause and without the password."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from tests.e2e.checks import (
    assert_nothing_written,
    assert_problem,
    log_lines,
    stored_order,
    wait_for,
)
from tests.e2e.raw_http import RawConnection, request_bytes
from tests.e2e.secured import MADE_UP_PASSWORD
from tests.e2e.server import RunningService, running_service
from tests.support.orders import add_orders

JSON = {"Content-Type": "application/json"}
LOG_SECONDS = 10.0
HUGE = "1e99999999999999999999"
"""An exponent no Decimal holds: it answered 500, with two tracebacks, and dropped the
connection."""
RAW_IN_A_LINE = ("\x1b", "\x9b", "\x85", "\u2028", "\u2029", "\r")
FORGING_PATH = "/%0AERROR%20forged%1B%5B31m%C2%9B%C2%85%E2%80%A8end"
"""A newline, then a fake line, an ANSI colour, a C1 CSI, NEL and LINE SEPARATOR."""
FORGED_PATH = "/\nERROR forged\x1b[31m\x9b\x85\u2028end"
"""The same path as the server reads it."""
MISSING_ROLE = "no_such_role_e2e"


def pay_body(order_id: int, amount: str = "9.99") -> bytes:
    return f'{{"order_id": {order_id}, "amount": {amount}}}'.encode()


def access_line(service: RunningService, request_id: str) -> dict[str, object]:
    """The access line of ``request_id``, once written."""
    found: list[dict[str, object]] = []

    def written() -> bool:
        found[:] = [
            line
            for line in log_lines(service.output())
            if line.get("request_id") == request_id and line["logger"] == "payment.access"
        ]
        return bool(found)

    wait_for(written, timeout=LOG_SECONDS, what=service.output)
    [line] = found
    return line


def errors_after(service: RunningService, offset: int) -> list[str]:
    """Lines at error level, or a traceback, written after ``offset`` characters of output."""
    written = service.output()[offset:]
    return [
        line
        for line in written.splitlines()
        if '"level": "error"' in line or "Traceback" in line or "ERROR" in line
    ]


@pytest.mark.parametrize(
    "send",
    [
        pytest.param({}, id="no content type"),
        pytest.param({"headers": {"Content-Type": "text/plain"}}, id="text/plain"),
        pytest.param(
            {"headers": {"Content-Type": "application/json; charset=latin-1"}}, id="latin-1"
        ),
        pytest.param({"form": True}, id="form"),
        pytest.param({"multipart": True}, id="multipart"),
    ],
)
def test_a_body_not_sent_as_json_is_refused_with_415_and_pays_nothing(
    client: httpx2.Client, clean_database: Engine, send: dict[str, object]
) -> None:
    (order_id,) = add_orders(clean_database, "9.99")
    if send.get("form"):
        response = client.post("/pay", data={"order_id": str(order_id), "amount": "9.99"})
    elif send.get("multipart"):
        response = client.post("/pay", files={"body": ("pay.json", pay_body(order_id))})
    else:
        headers = send.get("headers", {})
        assert isinstance(headers, dict)
        response = client.post("/pay", content=pay_body(order_id), headers=headers)

    assert_problem(response, 415, "unsupported_media_type")
    assert_nothing_written(clean_database, order_id)


def test_json_with_a_utf_8_charset_pays(client: httpx2.Client, clean_database: Engine) -> None:
    (order_id,) = add_orders(clean_database, "9.99")

    response = client.post(
        "/pay",
        content=pay_body(order_id),
        headers={"Content-Type": "Application/JSON; Charset=UTF-8"},
    )

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-32", "utf-32-be"])
def test_a_body_in_utf_16_or_32_or_with_a_byte_order_mark_is_malformed(
    client: httpx2.Client, clean_database: Engine, encoding: str
) -> None:
    (order_id,) = add_orders(clean_database, "9.99")

    response = client.post(
        "/pay", content=pay_body(order_id).decode().encode(encoding), headers=JSON
    )

    assert_problem(response, 400, "malformed_request")
    assert_nothing_written(clean_database, order_id)


def test_a_number_no_decimal_holds_is_a_422_and_the_request_pipelined_behind_is_answered(
    service: RunningService, clean_database: Engine
) -> None:
    refused, paid = add_orders(clean_database, "9.99", "9.99")
    bodies = [
        pay_body(refused, HUGE),
        pay_body(refused, "-" + HUGE.replace("e", "e-")),
        f'{{"order_id": {HUGE}, "amount": 9.99}}'.encode(),
        f'{{"order_id": {refused}, "amount": 9.99, "x": {{"y": [{HUGE}]}}}}'.encode(),
    ]
    request_ids = [f"e2e-huge-{uuid.uuid4().hex}" for _ in bodies]
    offset = len(service.output())

    with RawConnection(service.address) as connection:
        connection.send(
            b"".join(
                request_bytes(
                    "POST", "/pay", body=body, headers={**JSON, "X-Request-ID": request_id}
                )
                for body, request_id in zip(bodies, request_ids, strict=True)
            )
            + request_bytes("POST", "/pay", body=pay_body(paid), headers=JSON)
        )
        answers = [connection.read_response() for _ in range(len(bodies) + 1)]

    assert [answer.status for answer in answers] == [422] * len(bodies) + [200], answers
    assert [answer.json()["errors"][0]["pointer"] for answer in answers[:-1]] == [
        "/amount",
        "/amount",
        "/order_id",
        "/x",
    ]
    assert answers[-1].json()["order_id"] == paid
    for request_id in request_ids:
        assert access_line(service, request_id)["status"] == 422
    assert errors_after(service, offset) == []
    assert stored_order(clean_database, refused).status == "pending"


def requests_counted(service: RunningService, status: int) -> float:
    """POST /pay requests answered with ``status``, summed over the workers."""
    with httpx2.Client(base_url=service.base_url, timeout=15.0) as client:
        exposition = client.get("/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "payment_http_requests_total"
        and sample.labels == {"route": "/pay", "method": "POST", "status": str(status)}
    )


def test_a_client_that_leaves_mid_body_is_one_info_line_with_status_499(
    service: RunningService, clean_database: Engine
) -> None:
    (order_id,) = add_orders(clean_database, "9.99")
    request_id = f"e2e-left-{uuid.uuid4().hex}"
    body = pay_body(order_id)
    failed_before = requests_counted(service, 500)
    offset = len(service.output())
    head = (
        "POST /pay HTTP/1.1\r\nHost: e2e\r\nContent-Type: application/json\r\n"
        f"X-Request-ID: {request_id}\r\nContent-Length: {len(body) + 100}\r\n\r\n"
    )

    with RawConnection(service.address) as connection:
        connection.send(head.encode() + body)

    line = access_line(service, request_id)
    assert (line["level"], line["status"], line["route"]) == ("info", 499, "/pay"), line
    assert errors_after(service, offset) == []
    lines = log_lines(service.output())
    assert [other for other in lines if other.get("request_id") == request_id] == [line]
    assert requests_counted(service, 500) == failed_before
    assert requests_counted(service, 499) >= 1
    assert_nothing_written(clean_database, order_id)


def test_a_path_cannot_forge_a_json_log_line(service: RunningService) -> None:
    request_id = f"e2e-forge-{uuid.uuid4().hex}"

    with RawConnection(service.address) as connection:
        answer = connection.request("GET", FORGING_PATH, headers={"X-Request-ID": request_id})

    assert answer.status == 404
    line = access_line(service, request_id)
    assert line["path"] == FORGED_PATH
    written = [text for text in service.output().split("\n") if request_id in text]
    assert len(written) == 1
    assert not [c for c in RAW_IN_A_LINE if c in written[0]], written


@pytest.fixture(scope="module")
def console_service_without_its_role(
    database_url: URL, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningService, str]]:
    """One worker logging in the console format, reaching the run's database as a role that
    does not exist, with a password; and that password."""
    password = f"{MADE_UP_PASSWORD}-{uuid.uuid4().hex[:8]}"
    url = database_url.set(username=MISSING_ROLE, password=password)
    with running_service(
        {
            "DATABASE_URL": url.render_as_string(hide_password=False),
            "PAYMENT_LOG_FORMAT": "console",
            "PAYMENT_DB_CONNECT_TIMEOUT_SECONDS": "2",
        },
        tmp_path_factory.mktemp("console-service"),
        probe="/livez",
    ) as running:
        yield running, password


def test_a_path_cannot_forge_a_console_log_line_nor_reach_the_terminal_raw(
    console_service_without_its_role: tuple[RunningService, str],
) -> None:
    service, _ = console_service_without_its_role
    request_id = f"e2e-forge-{uuid.uuid4().hex}"

    with RawConnection(service.address) as connection:
        answer = connection.request("GET", FORGING_PATH, headers={"X-Request-ID": request_id})

    assert answer.status == 404
    wait_for(lambda: request_id in service.output(), timeout=LOG_SECONDS, what=service.output)
    output = service.output()
    [line] = [text for text in output.split("\n") if request_id in text]
    assert line.startswith("INFO "), line
    assert 'path="/\\x0aERROR forged\\x1b[31m\\x9b\\x85\\u2028end"' in line
    assert not [text for text in output.split("\n") if text.startswith("ERROR forged")]
    assert not [c for c in RAW_IN_A_LINE if c in output]


def test_a_database_error_is_logged_with_its_cause_and_never_the_password(
    console_service_without_its_role: tuple[RunningService, str],
) -> None:
    service, password = console_service_without_its_role
    request_id = f"e2e-role-{uuid.uuid4().hex}"

    with httpx2.Client(base_url=service.base_url, timeout=30.0) as client:
        response = client.post(
            "/pay", content=pay_body(1), headers={**JSON, "X-Request-ID": request_id}
        )
    assert_problem(response, 503, "service_unavailable")
    wait_for(
        lambda: "status=503" in service.output() and request_id in service.output(),
        timeout=LOG_SECONDS,
        what=service.output,
    )

    output = service.output()
    [warning] = [
        text for text in output.split("\n") if text.startswith("WARNING") and request_id in text
    ]
    assert warning.startswith("WARNING database unavailable: OperationalError: "), warning
    # The embedded server trusts every role it has: the cause is the missing role. A server
    # that asks for passwords refuses the password first.
    assert MISSING_ROLE in warning, warning
    assert "does not exist" in warning or "authentication failed" in warning, warning
    assert password not in output
