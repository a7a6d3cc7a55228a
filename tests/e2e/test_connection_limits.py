"""The server's own limits on what a client may hold (SPEC §3.6), seen from the wire against a
real `payment-service serve`: a request head over PAYMENT_MAX_HEADER_BYTES is answered 431,
a head or a body trickled a byte at a time is answered 408 once its time is up, a silent
connection is closed, the open connections of a worker are bounded (the idle ones make room
for new ones), and hundreds of clients holding partial bodies leave the worker's memory
bounded. The limits are set low so that each case takes a second or two.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from tests.e2e.checks import Observe, assert_nothing_written, log_lines, stored_order, wait_for
from tests.e2e.raw_http import RawConnection
from tests.e2e.server import RunningService, running_service
from tests.support.orders import add_orders

MAX_HEADER_BYTES = 16_384
"""The default, left as it is."""
MAX_CONNECTIONS = 40
HEAD_SECONDS = 1.5
BODY_SECONDS = 1.5
IDLE_SECONDS = 2.0
EVICTABLE_AFTER_SECONDS = min(0.25, IDLE_SECONDS / 2)
"""At the connection limit, how long a connection must have been idle to make room."""
LATE_MARGIN_SECONDS = 1.5
"""How much later than its limit a cut may come on a busy test machine."""
TRICKLE_SECONDS = 0.25
"""Between two bytes of a trickled head or body: well inside the idle limit, so that only
the head or body limit can cut it off."""
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def guarded(
    database_url: URL, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    """One worker with low connection limits, on the run's database. Its load shedding is set
    out of the way, so that what is measured is the connection limits alone."""
    with running_service(
        {
            "DATABASE_URL": database_url.render_as_string(hide_password=False),
            "PAYMENT_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            "PAYMENT_HEADER_TIMEOUT_SECONDS": str(HEAD_SECONDS),
            "PAYMENT_BODY_TIMEOUT_SECONDS": str(BODY_SECONDS),
            "PAYMENT_IDLE_TIMEOUT_SECONDS": str(IDLE_SECONDS),
            "PAYMENT_MAX_REQUESTS_IN_FLIGHT": "100000",
        },
        tmp_path_factory.mktemp("guarded-service"),
    ) as running:
        yield running


@dataclass(frozen=True, slots=True)
class LastWord:
    """All a connection got from the server until it closed (or the wait ended)."""

    data: bytes
    closed: bool
    after: float
    """Seconds from the start of the wait to the close, or to the end of the wait."""

    @property
    def status(self) -> int | None:
        return int(self.data.split(b" ", 2)[1]) if self.data else None

    def problem(self) -> dict[str, Any]:
        head, _, body = self.data.partition(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        assert b"content-type: application/problem+json" in lines, head
        assert b"connection: close" in lines, head
        problem: dict[str, Any] = json.loads(body)
        return problem


def last_word(sock: socket.socket, timeout: float) -> LastWord:
    """Reads until the server closes the connection, for at most ``timeout`` seconds."""
    started = time.monotonic()
    data = b""
    while (left := started + timeout - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        try:
            more = sock.recv(65536)
        except ConnectionResetError:
            return LastWord(data, closed=True, after=time.monotonic() - started)
        if not more:
            return LastWord(data, closed=True, after=time.monotonic() - started)
        data += more
    return LastWord(data, closed=False, after=time.monotonic() - started)


def trickle(sock: socket.socket, data: bytes, *, give_up_after: float) -> LastWord:
    """Sends ``data`` a byte every TRICKLE_SECONDS until the server answers or closes; what
    it said, ``after`` counted from the first byte."""
    started = time.monotonic()
    for byte in data:
        if time.monotonic() - started > give_up_after:
            break
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        if select.select([sock], [], [], TRICKLE_SECONDS)[0]:
            break
    word = last_word(sock, timeout=max(0.1, give_up_after - (time.monotonic() - started)))
    return LastWord(word.data, word.closed, after=time.monotonic() - started)


def head_of(size: int) -> bytes:
    """A GET /livez head of exactly ``size`` bytes, its last header padded."""
    start, end = b"GET /livez HTTP/1.1\r\nHost: e2e\r\nX-Padding: ", b"\r\n\r\n"
    return start + b"p" * (size - len(start) - len(end)) + end


def pay_head(content_length: int) -> bytes:
    return (
        "POST /pay HTTP/1.1\r\nHost: e2e\r\nContent-Type: application/json\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    ).encode()


def is_open(sock: socket.socket) -> bool:
    """True when the server has neither closed the connection nor sent anything on it."""
    if not select.select([sock], [], [], 0)[0]:
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except ConnectionResetError:
        return False


@contextmanager
def connections(service: RunningService, count: int) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(socket.create_connection(service.address, timeout=10))
            for _ in range(count)
        ]


def cpu_seconds_and_rss(pid: int) -> tuple[float, int]:
    """CPU time (user and system) and resident memory in bytes of a process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def logged(service: RunningService, message: str) -> list[dict[str, Any]]:
    """The server's log lines whose message begins with ``message``."""
    return [
        line for line in log_lines(service.output()) if str(line.get("message")).startswith(message)
    ]


def test_a_head_of_the_limit_is_served_and_one_byte_more_is_answered_431_and_closed(
    guarded: RunningService,
) -> None:
    with RawConnection(guarded.address) as connection:
        connection.send(head_of(MAX_HEADER_BYTES))
        served = connection.read_response()
        connection.send(head_of(MAX_HEADER_BYTES + 1))
        refused = connection.read_response()
        closed = connection.closed_by_server()

    assert served.status == 200, served
    assert refused.status == 431, refused
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["connection"] == "close"
    assert refused.json()["code"] == "request_header_fields_too_large"
    assert refused.json()["status"] == 431
    assert closed
    assert [line["status"] for line in logged(guarded, "request cut off: The request head")] == [
        431
    ]


HUGE_FIELD_STARTS = {
    "header": b"GET /livez HTTP/1.1\r\nHost: e2e\r\nX-Huge: ",
    "trailer": b"POST /pay HTTP/1.1\r\nHost: e2e\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Huge: ",
}
"""Where a 100 MB field may start: in a request head, or in the trailer of a chunked body
(which the parser gathers the same way, after the application has the request)."""


@pytest.mark.parametrize("place", sorted(HUGE_FIELD_STARTS))
def test_a_100_mb_field_is_refused_at_once_for_little_cpu_and_memory(
    guarded: RunningService, observe: Observe, place: str
) -> None:
    chunk = b"x" * (1 << 20)
    cpu_before, rss_before = cpu_seconds_and_rss(guarded.pid)
    started = time.monotonic()
    sent = 0
    with socket.create_connection(guarded.address, timeout=30) as sock:
        try:
            sock.sendall(HUGE_FIELD_STARTS[place])
            while sent < 100 * len(chunk):
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        refused_after = time.monotonic() - started
        word = last_word(sock, timeout=5)
    cpu_after, rss_after = cpu_seconds_and_rss(guarded.pid)
    observe("field_bytes_taken", sent)
    observe("refused_after_s", round(refused_after, 3))
    observe("server_cpu_s", round(cpu_after - cpu_before, 3))

    assert sent < 16 * len(chunk), f"{sent} bytes of the field taken before the refusal"
    assert refused_after < 2.0
    assert cpu_after - cpu_before < 0.5
    assert rss_after - rss_before < 32 << 20
    assert word.closed
    if word.data:  # the answer may be lost to the reset of a connection still sending
        assert word.status == 431, word
    assert httpx2.get(guarded.base_url + "/livez", timeout=5).status_code == 200


def test_a_head_trickled_a_byte_at_a_time_is_answered_408_when_its_time_is_up(
    guarded: RunningService,
) -> None:
    head = b"GET /livez HTTP/1.1\r\nHost: e2e\r\nX-Slow: " + b"s" * 200 + b"\r\n\r\n"
    with socket.create_connection(guarded.address) as sock:
        word = trickle(sock, head, give_up_after=HEAD_SECONDS + LATE_MARGIN_SECONDS + 2)

    assert word.status == 408, word
    assert word.problem()["code"] == "request_timeout"
    assert "head" in word.problem()["detail"]
    assert word.closed
    assert HEAD_SECONDS <= word.after < HEAD_SECONDS + LATE_MARGIN_SECONDS, word.after


def test_a_body_trickled_a_byte_at_a_time_is_answered_408_when_its_time_is_up_and_pays_nothing(
    guarded: RunningService, clean_database: Engine
) -> None:
    (order_id,) = add_orders(clean_database, "9.99")
    body = f'{{"order_id": {order_id}, "amount": "9.99"}}'.encode()
    with socket.create_connection(guarded.address) as sock:
        sock.sendall(pay_head(len(body)))
        word = trickle(sock, body, give_up_after=BODY_SECONDS + LATE_MARGIN_SECONDS + 2)

    assert word.status == 408, word
    assert word.problem()["code"] == "request_timeout"
    assert "body" in word.problem()["detail"]
    assert word.closed
    assert BODY_SECONDS <= word.after < BODY_SECONDS + LATE_MARGIN_SECONDS, word.after
    assert_nothing_written(clean_database, order_id)


def test_a_connection_silent_from_the_start_or_after_an_answer_is_closed_when_idle_too_long(
    guarded: RunningService,
) -> None:
    with (
        socket.create_connection(guarded.address) as silent,
        RawConnection(guarded.address) as answered,
    ):
        live = answered.request("GET", "/livez")
        answered.settimeout(IDLE_SECONDS / 2)
        closed_halfway = answered.closed_by_server(), not is_open(silent)
        answered.settimeout(IDLE_SECONDS / 2 + LATE_MARGIN_SECONDS)
        answered_closed = answered.closed_by_server()
        silent_end = last_word(silent, timeout=LATE_MARGIN_SECONDS)

    assert live.status == 200
    assert closed_halfway == (False, False)
    assert answered_closed, "the connection is still open after its idle time"
    assert silent_end.data == b""
    assert silent_end.closed, "the silent connection is still open after its idle time"


def test_beyond_the_connection_limit_connections_idle_for_a_while_make_room_for_new_ones(
    guarded: RunningService, clean_database: Engine
) -> None:
    """Idle a second or more, the oldest is closed for each new connection; a burst of new
    connections finds only young ones, and is closed at once instead."""
    (order_id,) = add_orders(clean_database, "9.99")
    with connections(guarded, MAX_CONNECTIONS) as first:
        time.sleep(EVICTABLE_AFTER_SECONDS + 0.1)
        with (
            connections(guarded, MAX_CONNECTIONS) as second,
            connections(guarded, 200) as burst,  # while the second are young
        ):
            time.sleep(0.15)
            first_open = [is_open(sock) for sock in first]
            second_open = [is_open(sock) for sock in second]
            burst_open = [is_open(sock) for sock in burst]
            time.sleep(EVICTABLE_AFTER_SECONDS)
            with httpx2.Client(base_url=guarded.base_url, timeout=5) as client:
                live = client.get("/livez")
                paid = client.post(
                    "/pay", content=f'{{"order_id": {order_id}, "amount": "9.99"}}', headers=JSON
                )

    assert not any(first_open), "the connections idle longest were kept"
    assert not any(burst_open), "young connections were closed to make room for a burst"
    assert all(second_open)
    assert live.status_code == 200
    assert paid.status_code == 200, paid.text
    assert stored_order(clean_database, order_id).status == "paid"


def test_with_a_request_in_progress_on_every_connection_a_new_one_is_closed_at_once(
    guarded: RunningService,
) -> None:
    """Nothing is cut to make room for it; once the bodies' time is up, there is room again."""
    partial = pay_head(100) + b'{"order_id": 1,'
    with connections(guarded, MAX_CONNECTIONS + 5) as busy:
        for sock in busy:  # the oldest were closed to make room for the newest
            with suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(partial)
        time.sleep(0.3)
        with socket.create_connection(guarded.address) as newcomer:
            refused = last_word(newcomer, timeout=1.0)
        answers = [last_word(sock, timeout=BODY_SECONDS + LATE_MARGIN_SECONDS) for sock in busy]

    assert refused.closed
    assert refused.data == b""
    assert refused.after < 0.5
    assert [answer.status for answer in answers].count(408) >= MAX_CONNECTIONS - 5, answers
    wait_for(
        lambda: httpx2.get(guarded.base_url + "/livez", timeout=5).status_code == 200,
        timeout=5,
        what=guarded.output,
    )
    assert logged(guarded, "open connections at the limit")


def test_hundreds_of_clients_holding_partial_bodies_leave_the_worker_memory_bounded(
    guarded: RunningService, observe: Observe
) -> None:
    """600 clients each send the head and 60 KiB of a 64 KiB body and wait: without a limit,
    a worker holds about 140 KiB for each (88 MiB here, 1 GiB for 7,000)."""
    partial = pay_head(65_536) + b'{"order_id": 1, "amount": 9.99' + b" " * (60 * 1024)
    _, rss_before = cpu_seconds_and_rss(guarded.pid)
    with connections(guarded, 600) as clients:
        for sock in clients:
            sock.setblocking(False)
            with suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                sock.send(partial)
        time.sleep(1.0)
        _, rss_held = cpu_seconds_and_rss(guarded.pid)
        held = sum(is_open(sock) for sock in clients)
    observe("connections_held", held)
    observe("rss_growth_mib", round((rss_held - rss_before) / (1 << 20), 1))

    assert held <= MAX_CONNECTIONS
    assert rss_held - rss_before < 30 << 20
