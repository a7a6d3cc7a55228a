"""HTTP/1.1 by hand over one TCP connection, for what a client library hides: which
connection a request goes on, requests pipelined behind a refused body, and a server that
closes an idle keep-alive connection."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from types import TracebackType
from typing import Any


class ClosedBeforeResponse(Exception):
    """The server closed (or reset) the connection before sending any byte of a response."""


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    """Names in lower case."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request_bytes(
    method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """A request with a Content-Length body (none for an empty GET)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: e2e"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method != "GET":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RawConnection:
    """One TCP connection to the server; every read is bounded by ``timeout``."""

    def __init__(self, address: tuple[str, int], *, timeout: float = 10.0) -> None:
        self._socket = socket.create_connection(address, timeout=timeout)
        self._buffer = bytearray()
        self._ended = False

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._socket.close()

    def _fill(self) -> bool:
        """Reads what the server sent next into the buffer; False at the end of the stream."""
        if self._ended:
            return False
        data = self._socket.recv(65536)
        if not data:
            self._ended = True
            return False
        self._buffer += data
        return True

    def _line(self) -> bytes:
        """The next line with its CRLF, or what is left when the stream ends first."""
        while (end := self._buffer.find(b"\r\n")) < 0 and self._fill():
            pass
        size = len(self._buffer) if end < 0 else end + 2
        line = bytes(self._buffer[:size])
        del self._buffer[:size]
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size and self._fill():
            pass
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def send(self, data: bytes) -> None:
        """Raises ClosedBeforeResponse when the server has already closed the connection."""
        try:
            self._socket.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as error:
            raise ClosedBeforeResponse(repr(error)) from None

    def request(
        self, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> RawResponse:
        self.send(request_bytes(method, path, body=body, headers=headers))
        return self.read_response()

    def read_response(self) -> RawResponse:
        """The next whole response. ClosedBeforeResponse when the connection ends before its
        first byte; AssertionError when it ends in the middle (a truncated response)."""
        try:
            status_line = self._line()
        except ConnectionResetError as error:
            if self._buffer:
                raise AssertionError(f"reset in a response: {bytes(self._buffer)!r}") from None
            raise ClosedBeforeResponse(repr(error)) from None
        if not status_line:
            raise ClosedBeforeResponse("end of stream")
        version, status, _ = status_line.decode("latin-1").split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers: dict[str, str] = {}
        while (line := self._line()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        assert line == b"\r\n", f"the headers were cut short: {status_line!r} {headers}"
        assert "content-length" in headers, f"a response without Content-Length: {headers}"
        length = int(headers["content-length"])
        body = self._exactly(length)
        assert len(body) == length, f"a truncated body: {len(body)} of {length} bytes: {body!r}"
        return RawResponse(int(status), headers, body)

    def closed_by_server(self) -> bool:
        """Waits (up to the connection's timeout) for the server to close the connection:
        True when it did, False when it stayed open and silent. AssertionError on any byte,
        since no request is waiting for an answer."""
        assert not self._buffer, f"unexpected data on an idle connection: {bytes(self._buffer)!r}"
        try:
            more = self._fill()
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        assert not more, f"unexpected data on an idle connection: {bytes(self._buffer)!r}"
        return True

    def settimeout(self, timeout: float) -> None:
        self._socket.settimeout(timeout)
