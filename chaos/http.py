"""A small HTTP/1.1 client on asyncio streams, for the soak's traffic.

Keep-alive connections to one server on loopback, at most ``limit`` requests at once, each
request with its own time limit. Written here rather than taken from a library so that every
way a request can end is told apart and counted: an answer (status, headers, body), a
connection refused, a connection cut before the whole answer came (a killed worker), no answer
in time, or bytes that are not HTTP.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

REFUSED = "refused"
"""No connection could be opened."""
CUT = "cut"
"""The connection was closed or reset before the whole answer came."""
TIMEOUT = "timeout"
"""No whole answer within the request's time limit."""
PROTOCOL = "protocol"
"""The server's bytes were not an HTTP/1.1 answer."""

MAX_IDLE_SECONDS = 2.0
"""A kept connection idle longer than this is closed rather than reused: the service closes
idle connections after a few seconds, and a request sent on one it is closing would be
counted as cut."""
MAX_HEAD_BYTES = 65_536


class ProtocolError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    body: bytes

    def json(self) -> dict[str, object]:
        """The body as a JSON object; empty when it is not one."""
        try:
            document = json.loads(self.body)
        except ValueError:
            return {}
        return document if isinstance(document, dict) else {}


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one request ended: ``answer``, or ``failure`` (one of the constants above)."""

    answer: Answer | None
    failure: str | None
    ended: float
    """On the ``time.monotonic()`` clock."""
    seconds: float

    @property
    def status(self) -> int | None:
        return None if self.answer is None else self.answer.status


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def close(self) -> None:
        self.writer.transport.abort()


class Client:
    """Requests to ``host:port``, at most ``limit`` at once, on kept connections."""

    def __init__(self, host: str, port: int, *, limit: int, timeout: float) -> None:
        self._host, self._port = host, port
        self._timeout = timeout
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Outcome:
        """One request; never raises for what the server or the network did."""
        message = self._encode(method, path, body, headers or {})
        async with self._slots:
            started = time.monotonic()
            answer, failure = await self._exchange(message, head_only=method == "HEAD")
            ended = time.monotonic()
        return Outcome(answer, failure, ended, ended - started)

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    async def _exchange(
        self, message: bytes, *, head_only: bool
    ) -> tuple[Answer | None, str | None]:
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    connection = await self._connection()
                except OSError:
                    return None, REFUSED
                connection.writer.write(message)
                answer, keep = await _read_answer(connection.reader, head_only=head_only)
        except TimeoutError:
            failure = TIMEOUT
        except (OSError, asyncio.IncompleteReadError):
            failure = CUT
        except (ProtocolError, asyncio.LimitOverrunError, ValueError):
            failure = PROTOCOL
        else:
            if keep:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()
            return answer, None
        if connection is not None:
            connection.close()
        return None, failure

    async def _connection(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since <= MAX_IDLE_SECONDS:
                return connection
            connection.close()
        reader, writer = await asyncio.open_connection(self._host, self._port)
        return _Connection(reader, writer)

    def _encode(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host}:{self._port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def _read_answer(reader: asyncio.StreamReader, *, head_only: bool) -> tuple[Answer, bool]:
    """One answer, and whether the connection may carry another request."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEAD_BYTES:
        raise ProtocolError("answer head too large")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    if not version.startswith("HTTP/1."):
        raise ProtocolError(f"not an HTTP/1 answer: {status_line[:60]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    keep = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
    if head_only or status in (204, 304) or 100 <= status < 200:
        return Answer(status, headers, b""), keep
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return Answer(status, headers, await _read_chunked(reader)), keep
    if "content-length" in headers:
        length = int(headers["content-length"])
        return Answer(status, headers, await reader.readexactly(length)), keep
    return Answer(status, headers, await reader.read()), False  # to the end of the connection


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, if any
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
