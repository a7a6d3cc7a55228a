"""The HTTP server's limits on each connection (``GuardedHttpToolsProtocol``), on the event
loop with a fake transport: what the wire tests (tests/e2e/test_connection_limits.py) cannot
time or arrange. A request the application is answering is never cut, nor answered twice;
requests queued behind it are not late while the server does not read them; the idle
connection that waited longest makes room at the limit, a busy one never does.
"""

from __future__ import annotations

import asyncio
import pickle
import re
import resource
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from payment.entrypoints.http import server
from payment.entrypoints.http.server import (
    FILES_BESIDES_CONNECTIONS,
    ConnectionLimits,
    GuardedHttpToolsProtocol,
    fit_open_files,
    guarded_http_protocol,
)

pytestmark = pytest.mark.anyio

LIMIT_SECONDS = 0.2
"""The head, body and idle limits of these tests."""
LIMITS = ConnectionLimits(
    max_connections=3,
    max_head_bytes=1024,
    head_timeout=LIMIT_SECONDS,
    body_timeout=LIMIT_SECONDS,
    idle_timeout=LIMIT_SECONDS,
)
STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")


@pytest.fixture(autouse=True)
def short_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "LINGER_SECONDS", 0.05)


class FakeTransport(asyncio.Transport):
    """A connection's transport as the protocol sees it; records what it was told."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.protocol: asyncio.Protocol | None = None
        self.sent = bytearray()
        self.closed = False
        self.reading = True
        self.eof_sent = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8004)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after the close"
        assert not self.eof_sent, "written after the end of the stream"
        self.sent += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            assert self.protocol is not None
            self.loop.call_soon(self.protocol.connection_lost, None)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_sent = True

    def statuses(self) -> list[int]:
        return [int(status) for status in STATUS_LINE.findall(bytes(self.sent))]


@dataclass
class App:
    """Answers 200 once it has the whole body, after ``X-Think`` seconds; ``/early`` is
    answered 413 at once, its body unread. Notes each request's last message."""

    last_messages: list[str] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/early":
            await self.answer(send, 413)
            return
        message: dict[str, Any] = {"type": "http.request", "more_body": True}
        while message["type"] == "http.request" and message.get("more_body", False):
            message = await receive()
        self.last_messages.append(message["type"])
        if message["type"] == "http.disconnect":
            return
        think = dict(scope["headers"]).get(b"x-think", b"0")
        await asyncio.sleep(float(think))
        await self.answer(send, 200)

    @staticmethod
    async def answer(send: Any, status: int) -> None:
        start = {"type": "http.response.start", "status": status}
        await send({**start, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


@dataclass
class Server:
    """One uvicorn server's shared state: connections are made to it by hand."""

    app: App
    limits: ConnectionLimits = LIMITS
    state: ServerState = field(default_factory=ServerState)

    def __post_init__(self) -> None:
        self.config = Config(app=self.app, ws="none", lifespan="off", log_config=None)
        self.config.load()

    def connect(self) -> tuple[GuardedHttpToolsProtocol, FakeTransport]:
        loop = asyncio.get_running_loop()
        protocol = GuardedHttpToolsProtocol(
            config=self.config,
            server_state=self.state,
            app_state={},
            _loop=loop,
            limits=self.limits,
        )
        transport = FakeTransport(loop)
        transport.protocol = protocol
        protocol.connection_made(transport)
        return protocol, transport


@pytest.fixture
def app() -> App:
    return App()


@pytest.fixture
def served(app: App) -> Server:
    return Server(app)


def request(path: str = "/", *, think: float = 0.0, body: bytes = b"", length: int = -1) -> bytes:
    declared = len(body) if length < 0 else length
    return (
        f"POST {path} HTTP/1.1\r\nHost: unit\r\nX-Think: {think}\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode() + body


async def test_an_answer_slower_than_every_time_limit_is_sent_whole_and_the_connection_kept(
    served: Server,
) -> None:
    protocol, transport = served.connect()

    protocol.data_received(request(think=3 * LIMIT_SECONDS, body=b"{}"))
    await asyncio.sleep(3.5 * LIMIT_SECONDS)
    answered, kept = transport.statuses(), not transport.closed
    await asyncio.sleep(1.5 * LIMIT_SECONDS)

    assert answered == [200]
    assert kept
    assert transport.closed, "idle after its answer for longer than the idle limit"


async def test_a_request_queued_behind_a_slow_answer_is_not_late_while_the_server_does_not_read(
    served: Server,
) -> None:
    """The second request's head comes while the first is answered, its body only once the
    server reads again: its body limit starts then, not at the end of its head."""
    protocol, transport = served.connect()

    protocol.data_received(request(think=3 * LIMIT_SECONDS, body=b"{}"))
    await asyncio.sleep(0.1 * LIMIT_SECONDS)
    protocol.data_received(request(length=2))
    paused = not transport.reading
    while not transport.reading:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5 * LIMIT_SECONDS)
    protocol.data_received(b"{}")
    await asyncio.sleep(0.25 * LIMIT_SECONDS)

    assert paused
    assert transport.statuses() == [200, 200]
    assert not transport.closed


async def test_a_body_limit_behind_an_answer_under_way_ends_the_connection_after_that_answer(
    served: Server, app: App
) -> None:
    """The server reads, the client sends nothing more: the first answer goes out whole, the
    request behind it is dropped with the connection."""
    protocol, transport = served.connect()

    protocol.data_received(request(think=3 * LIMIT_SECONDS, body=b"{}") + request(length=2))
    await asyncio.sleep(4 * LIMIT_SECONDS)

    assert transport.statuses() == [200]
    assert transport.sent.endswith(b"\r\n\r\nok")
    assert transport.closed
    assert app.last_messages == ["http.request"]


async def test_a_head_over_the_limit_behind_an_answer_under_way_ends_the_connection_after_it(
    served: Server,
) -> None:
    """Nothing is slipped into the first answer: the connection closes once it is sent."""
    protocol, transport = served.connect()

    protocol.data_received(
        request(think=LIMIT_SECONDS / 2, body=b"{}") + b"GET / HTTP/1.1\r\nX-A: " + b"a" * 2000
    )
    await asyncio.sleep(LIMIT_SECONDS)

    assert transport.statuses() == [200]
    assert transport.sent.endswith(b"\r\n\r\nok")
    assert transport.closed


async def test_a_head_that_ends_within_the_limit_is_served_though_a_read_brings_more(
    served: Server,
) -> None:
    """One read holds a request, its body and the start of the next: together over the head
    limit, each head well within it."""
    protocol, transport = served.connect()
    first = request(body=b" " * 900)
    second = request(body=b"{}")
    assert len(first + second) > LIMITS.max_head_bytes

    protocol.data_received(first + second)
    await asyncio.sleep(LIMIT_SECONDS / 2)

    assert transport.statuses() == [200, 200]


async def test_a_head_over_the_limit_is_answered_431_and_nothing_of_it_reaches_the_app(
    served: Server, app: App
) -> None:
    protocol, transport = served.connect()

    protocol.data_received(b"GET / HTTP/1.1\r\nX-A: " + b"a" * 1002 + b"\r\n\r\n")
    await asyncio.sleep(0.1)

    assert transport.statuses() == [431]
    assert transport.eof_sent
    assert transport.closed
    assert app.last_messages == []


async def test_a_body_cut_off_tells_the_waiting_app_that_the_client_has_gone(
    served: Server, app: App
) -> None:
    protocol, transport = served.connect()

    protocol.data_received(request(length=10) + b"{")
    await asyncio.sleep(1.5 * LIMIT_SECONDS)

    assert transport.statuses() == [408]
    assert app.last_messages == ["http.disconnect"]
    assert transport.closed


async def test_a_body_unfinished_after_an_early_answer_is_cut_off_without_a_second_answer(
    served: Server,
) -> None:
    protocol, transport = served.connect()

    protocol.data_received(request("/early", length=100) + b"{")
    await asyncio.sleep(1.5 * LIMIT_SECONDS)

    assert transport.statuses() == [413]
    assert transport.closed


async def test_a_connection_answered_before_its_body_ended_is_closed_once_idle_after_it(
    served: Server,
) -> None:
    protocol, transport = served.connect()

    protocol.data_received(request("/early", length=2))
    await asyncio.sleep(0.5 * LIMIT_SECONDS)
    protocol.data_received(b"{}")
    await asyncio.sleep(0.5 * LIMIT_SECONDS)
    kept_a_while = not transport.closed
    await asyncio.sleep(LIMIT_SECONDS)

    assert transport.statuses() == [413]
    assert kept_a_while
    assert transport.closed


async def test_a_trailer_over_the_limit_is_answered_431(served: Server, app: App) -> None:
    protocol, transport = served.connect()
    head = b"POST / HTTP/1.1\r\nHost: unit\r\nTransfer-Encoding: chunked\r\n\r\n"

    protocol.data_received(head + b"2\r\n{}\r\n0\r\nX-Trailer: ")
    for _ in range(3):
        protocol.data_received(b"t" * 500)
    await asyncio.sleep(0.1)

    assert transport.statuses() == [431]
    assert app.last_messages == ["http.disconnect"]
    assert transport.closed


async def test_at_the_limit_the_connection_idle_longest_makes_room_once_it_has_waited_a_while(
    app: App,
) -> None:
    """One that has just come is not pushed out by a newer one; one with a request in
    progress never is."""
    served = Server(app, limits=replace(LIMITS, idle_timeout=1.0))  # evictable after 0.25 s
    _, oldest = served.connect()
    busy_protocol, busy = served.connect()
    busy_protocol.data_received(request(think=0.5, body=b"{}"))
    await asyncio.sleep(0.35)
    _, young = served.connect()

    _, newer = served.connect()  # one over the limit of 3: the oldest idle one makes room
    closed_for_newer = oldest.closed, busy.closed, young.closed, newer.closed
    _, newest = served.connect()  # only a young idle one is left: the new one is refused
    closed_for_newest = busy.closed, young.closed, newer.closed, newest.closed
    await asyncio.sleep(0.3)

    assert closed_for_newer == (True, False, False, False)
    assert closed_for_newest == (False, False, False, True)
    assert newest.sent == b""
    assert busy.statuses() == [200]


async def test_at_the_limit_with_a_request_in_progress_on_every_connection_a_new_one_is_closed(
    served: Server,
) -> None:
    busy = [served.connect() for _ in range(LIMITS.max_connections)]
    for protocol, _ in busy:
        protocol.data_received(request(think=LIMIT_SECONDS / 2, body=b"{}"))
    _, refused = served.connect()
    await asyncio.sleep(0.75 * LIMIT_SECONDS)

    assert refused.closed
    assert refused.sent == b""
    assert [transport.statuses() for _, transport in busy] == [[200]] * len(busy)


def test_the_protocol_given_to_uvicorn_reaches_each_worker_process_with_its_limits() -> None:
    """uvicorn pickles its configuration, ``http`` included, for every worker it spawns."""
    given = guarded_http_protocol(LIMITS)

    copied = pickle.loads(pickle.dumps(given))  # noqa: S301 - our own object, just made

    assert copied.func is GuardedHttpToolsProtocol
    assert copied.keywords == {"limits": LIMITS}


class OpenFilesLimit:
    """The process's RLIMIT_NOFILE, as ``resource`` shows it to fit_open_files."""

    def __init__(self, soft: int, hard: int) -> None:
        self.soft, self.hard = soft, hard

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        assert limits[0] <= limits[1] == self.hard
        self.soft = limits[0]


@pytest.mark.parametrize(
    ("soft", "hard", "soft_after", "max_connections"),
    [
        (100_000, 100_000, 100_000, 3),  # enough already: left alone
        (16, 4096, 3 + FILES_BESIDES_CONNECTIONS, 3),  # raised to what is needed
    ],
)
def test_the_open_files_limit_is_raised_to_what_the_connections_need(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, soft_after: int, max_connections: int
) -> None:
    limit = OpenFilesLimit(soft, hard)
    monkeypatch.setattr(resource, "getrlimit", limit.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", limit.setrlimit)

    fitted, warning = fit_open_files(LIMITS)

    assert (limit.soft, fitted.max_connections, warning) == (soft_after, max_connections, None)


def test_connections_beyond_the_hard_open_files_limit_are_not_allowed_and_it_is_said(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limit = OpenFilesLimit(1024, 1500)
    monkeypatch.setattr(resource, "getrlimit", limit.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", limit.setrlimit)

    fitted, warning = fit_open_files(replace(LIMITS, max_connections=2000))

    assert limit.soft == 1500
    assert fitted == replace(LIMITS, max_connections=1500 - FILES_BESIDES_CONNECTIONS)
    assert warning is not None
    assert "PAYMENT_MAX_CONNECTIONS=2000" in warning
