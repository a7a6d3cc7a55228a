"""A webhook subscriber for tests: a real HTTP server on loopback that records every request and
misbehaves on demand.

    with WebhookReceiver.running() as receiver:
        destination = WebhookDestination(receiver.url, ...)   # http://127.0.0.1:<port>/hooks
        ...deliver...
        receiver.wait_for(1)                # blocks until one request arrived (or fails)
        receiver.requests[0].headers["Payment-Signature"], receiver.requests[0].body

        receiver.answer(500)                # every later request gets a 500
        receiver.answer(204)                # ... and a 204 again (the default)
        receiver.hang()                     # requests are read, recorded, and never answered ...
        receiver.release()                  # ... until released (then answered as configured)
        receiver.disappear()                # the port is closed, open connections cut
        receiver.come_back()                # listening again, on the same port

A stdlib ``ThreadingHTTPServer`` run by a thread of its own, speaking HTTP/1.1 with keep-alive
(as real subscribers do), so that a client's pooled connections have to survive it vanishing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"
PATH = "/hooks"


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as it arrived."""

    method: str
    path: str
    headers: Mapping[str, str]
    """Header names as sent; look them up case-insensitively with ``header``."""
    body: bytes
    received_at: datetime

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass(slots=True)
class _Behaviour:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    hanging: bool = False
    released: threading.Event = field(default_factory=threading.Event)


class WebhookReceiver:
    """An HTTP server on ``127.0.0.1`` (a free port, kept across ``disappear``/``come_back``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._requests: list[ReceivedRequest] = []
        self._behaviour = _Behaviour()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[WebhookReceiver]:
        receiver = cls()
        receiver.come_back()
        try:
            yield receiver
        finally:
            receiver.disappear()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{PATH}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """The requests once at least ``count`` have arrived; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(self._requests)} webhook requests arrived, {count} expected"
                    )
                self._arrived.wait(left)
            return list(self._requests)

    def answer(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        """Answer every later request with ``status`` (and ``headers``), without hanging."""
        with self._lock:
            self._behaviour.released.set()
            self._behaviour = _Behaviour(status=status, headers=dict(headers or {}))

    def hang(self) -> None:
        """Read and record later requests, and answer none until ``release``."""
        with self._lock:
            current = self._behaviour
            self._behaviour = _Behaviour(status=current.status, headers=current.headers)
            self._behaviour.hanging = True

    def release(self) -> None:
        """Let the hanging requests, and the later ones, be answered."""
        with self._lock:
            self._behaviour.hanging = False
            self._behaviour.released.set()

    def disappear(self) -> None:
        """Close the listening socket and cut every open connection (hanging ones included)."""
        self.release()
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        thread.join(timeout=5)

    def come_back(self) -> None:
        """Listen again, on the same port (a free one the first time)."""
        if self._server is not None:
            return
        server = ThreadingHTTPServer((HOST, self.port), self._handler_class())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with receiver._lock:
                    receiver._connections.add(self.connection)

            def finish(self) -> None:
                with receiver._lock:
                    receiver._connections.discard(self.connection)
                with suppress(OSError):
                    super().finish()

            def do_POST(self) -> None:
                receiver._serve(self)

            do_GET = do_PUT = do_DELETE = do_POST  # noqa: N815 - http.server's names

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test reads ``requests`` instead."""

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        request = ReceivedRequest(
            method=handler.command,
            path=handler.path,
            headers=dict(handler.headers.items()),
            body=body,
            received_at=datetime.now(UTC),
        )
        with self._arrived:
            self._requests.append(request)
            self._arrived.notify_all()
            behaviour = self._behaviour
        if behaviour.hanging:
            behaviour.released.wait()
            if self._server is None:  # it disappeared meanwhile: no answer at all
                return
        with suppress(OSError):
            handler.send_response(behaviour.status)
            for name, value in behaviour.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
