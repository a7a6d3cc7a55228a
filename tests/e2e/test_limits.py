"""The 64 KiB body limit (SPEC §2) seen from the wire: a body over it is refused with 413
whether its length is declared or it comes in chunks, and the same server, on the same
connection, goes on answering."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
from sqlalchemy import Engine

from tests.e2e.checks import assert_nothing_written, assert_problem, stored_order
from tests.e2e.raw_http import RawConnection, request_bytes
from tests.e2e.server import RunningService
from tests.support.orders import add_orders

JSON = {"Content-Type": "application/json"}
LIMIT = 64 * 1024


def padded_body(order_id: int, size: int) -> bytes:
    """A valid payment of ``order_id`` (total 9.99), ``size`` bytes long with JSON spaces."""
    body = f'{{"order_id": {order_id}, "amount": 9.99}}'.encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


def in_chunks(body: bytes, size: int = 8192) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def chunked(body: bytes, size: int = 8192) -> bytes:
    """``body`` in the chunked transfer coding."""
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in in_chunks(body, size)]
    return b"".join(parts) + b"0\r\n\r\n"


def test_bodies_over_64_kib_are_refused_and_the_server_goes_on(
    client: httpx2.Client, clean_database: Engine
) -> None:
    refused, paid = add_orders(clean_database, "9.99", "9.99")

    declared = client.post("/pay", content=padded_body(refused, 70 * 1024), headers=JSON)
    streamed = client.post("/pay", content=in_chunks(padded_body(refused, 70 * 1024)), headers=JSON)

    assert declared.request.headers["content-length"] == str(70 * 1024)
    assert_problem(declared, 413, "payload_too_large")
    assert streamed.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in streamed.request.headers
    assert_problem(streamed, 413, "payload_too_large")
    assert_nothing_written(clean_database, refused, paid)
    after = client.post("/pay", content=padded_body(paid, 100), headers=JSON)
    assert after.status_code == 200, after.text
    assert client.get("/livez").status_code == 200


def test_a_request_pipelined_behind_a_refused_body_is_answered_on_the_same_connection(
    service: RunningService, clean_database: Engine
) -> None:
    """The refused body is skipped, not read as the next request: no desynchronised stream."""
    refused, paid = add_orders(clean_database, "9.99", "9.99")
    declared = request_bytes("POST", "/pay", body=padded_body(refused, 70 * 1024), headers=JSON)
    streamed = (
        b"POST /pay HTTP/1.1\r\nHost: e2e\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked(padded_body(refused, 4 * LIMIT))
    )
    pay = request_bytes("POST", "/pay", body=padded_body(paid, 100), headers=JSON)
    live = request_bytes("GET", "/livez")

    with RawConnection(service.address) as connection:
        connection.send(declared + live + streamed + pay)
        answers = [connection.read_response() for _ in range(4)]

    assert [answer.status for answer in answers] == [413, 200, 413, 200], answers
    assert answers[0].json()["code"] == answers[2].json()["code"] == "payload_too_large"
    assert answers[1].json() == {"status": "ok"}
    assert answers[3].json()["order_id"] == paid
    assert stored_order(clean_database, refused).status == "pending"
    assert stored_order(clean_database, paid).status == "paid"
