"""The HTTP server's own limits on what a client may hold (SPEC §3.6), before any request
reaches the application: the size of a request head, the time to send a head and a body, the
time a connection may stay silent, and the number of open connections per worker.

uvicorn's parser (httptools) has none of them: a connection that never sends a byte stays
open for ever, a head or a body trickled a byte at a time is never cut off, and a head of any
size is gathered (by repeated concatenation: a 100 MB header costs seconds of CPU, during
which the worker serves nobody). So ``payment-service serve`` and ``dev`` run uvicorn with
``GuardedHttpToolsProtocol``, its httptools protocol with these checks added:

- a head over ``max_head_bytes`` is answered 431 and the connection closed; the parser is
  never given more than that much of a head, so a huge one costs microseconds. The same bound
  holds for what a chunked body carries besides its data (chunk extensions, trailer fields);
- a head not whole ``head_timeout`` seconds after its first byte, or a body not whole
  ``body_timeout`` seconds after the end of its head, is answered 408 and the connection
  closed (the application, waiting for the body, is told the client has gone);
- a connection that sends nothing for ``idle_timeout`` seconds, before its first request or
  between two, is closed without an answer;
- beyond ``max_connections`` open connections in the worker, the connection that has waited
  longest without a request in progress (idle, or still sending its head) is closed to make
  room for the new one, if it has waited a quarter of a second at least; else the new one
  is closed at once. So sockets held open by one client cannot lock the others (or the
  probes) out, and a request in progress is never cut to make room.

A connection is never answered twice at once: when a response to an earlier (pipelined)
request is under way, a limit stops the reading and closes the connection once that response
is sent, instead of answering. One timer per connection, re-armed only when it fires early:
on the hot path a request costs a few attribute writes and reads of the loop's clock. No time
limit runs out while the server itself has stopped reading (a pipelined request queued behind
another, a body waiting for the application to take it): the client is not late then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import resource
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from http import HTTPStatus
from typing import Any, Final, cast

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from payment.entrypoints.http.problems import PROBLEM_JSON, ProblemKind

logger = logging.getLogger(__name__)

REQUEST_HEADER_FIELDS_TOO_LARGE = ProblemKind(
    431, "request_header_fields_too_large", "Request header fields too large"
)
REQUEST_TIMEOUT = ProblemKind(408, "request_timeout", "Request timeout")

LINGER_SECONDS: Final = 1.0
"""After an error answer, how long what the client still sends is read and dropped before the
connection is closed: closing with unread data resets the connection, and the client could
lose the answer."""
LINGER_BYTES: Final = 256 * 1024
"""... and at most this much of it: a client that keeps sending is reset sooner."""
EVICTABLE_AFTER_SECONDS: Final = 0.25
"""At the connection limit, a connection without a request in progress is closed to make
room only once it has waited this long (or half the idle limit, if less): time enough for
the server to read the head a client sends as it connects, even while a burst of new
connections keeps it busy, so that a burst does not push out the ones that just came; short
enough that a flood of new connections must come faster than the limit every quarter of a
second to keep every connection young, and all new ones out."""
LIMIT_LOG_INTERVAL_SECONDS: Final = 10.0
"""What the connection limit did is logged at most this often, as one line with counts."""
FILES_BESIDES_CONNECTIONS: Final = 256
"""File descriptors a worker needs besides its client connections: the database pool, the
listening socket, logs, metrics files, Python's own."""

# Where the reading of a connection stands.
_WAITING: Final = 0
"""Nothing of a next request read yet (a new connection, or a response sent): idle limit."""
_HEAD: Final = 1
"""Part of a request head read: head limit, from its first byte."""
_BODY: Final = 2
"""The head read, the body not yet whole: body limit, from the end of the head."""
_ANSWERING: Final = 3
"""The request read whole; the application answers it: no limit of this module."""
_CLOSING: Final = 4
"""Refused or cut off: what comes is dropped until the connection is closed."""


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client connection may hold of a worker; times in seconds."""

    max_connections: int
    max_head_bytes: int
    head_timeout: float
    body_timeout: float
    idle_timeout: float

    def __post_init__(self) -> None:
        if min(self.max_connections, self.max_head_bytes) < 1:
            raise ValueError("the connection and head size limits must be positive")
        if min(self.head_timeout, self.body_timeout, self.idle_timeout) <= 0:
            raise ValueError("the time limits must be positive")


class _Crowd:
    """The connections of one server (one worker) as the connection limit sees them."""

    def __init__(self) -> None:
        self.idle: OrderedDict[GuardedHttpToolsProtocol, None] = OrderedDict()
        """The connections no request of theirs is in: waiting for one, or reading its head.
        The first has waited longest. Only these are closed to make room for a new one."""
        self.made_room = 0
        self.refused = 0
        self.logged_at = -math.inf

    def note(self, now: float, limit: int, *, made_room: bool) -> None:
        """What was done for a new connection at the limit, logged as one line now and then:
        the connection that had waited longest closed to make room, or the new one closed."""
        if made_room:
            self.made_room += 1
        else:
            self.refused += 1
        if now - self.logged_at >= LIMIT_LOG_INTERVAL_SECONDS:
            logger.warning(
                "open connections at the limit",
                extra={
                    "fields": {
                        "max_connections": limit,
                        "idle_closed": self.made_room,
                        "new_refused": self.refused,
                    }
                },
            )
            self.made_room = self.refused = 0
            self.logged_at = now


class _Flow(FlowControl):
    """uvicorn's flow control, telling when reading resumes after a pause."""

    def __init__(self, transport: asyncio.Transport, on_resume: Callable[[], None]) -> None:
        super().__init__(transport)
        self._on_resume = on_resume

    def resume_reading(self) -> None:
        if self.read_paused:
            super().resume_reading()
            self._on_resume()


_CROWD_ATTRIBUTE: Final = "payment_crowd"
"""Where a server's crowd is kept: on the state uvicorn shares between its connections."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``ConnectionLimits`` (module docstring).

    uvicorn makes one per connection, with its own keyword arguments; ``limits`` is bound by
    ``guarded_http_protocol``."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        crowd = getattr(self.server_state, _CROWD_ATTRIBUTE, None)
        if crowd is None:
            crowd = _Crowd()
            setattr(self.server_state, _CROWD_ATTRIBUTE, crowd)
        self._crowd: _Crowd = crowd
        self._limits = limits
        self._phase = _WAITING
        self._unparsed = 0
        """Bytes given to the parser since the current head began, or since the last bytes of
        body data: a head, or what a chunked body carries besides its data. Bytes that follow
        a request in the same read as its end are not counted (less than one read's worth)."""
        self._progress = 0
        """Counts the parser's steps forward: a head begun or ended, body data, a request
        ended."""
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._lingered = 0
        self._idle_since = 0.0
        self._evictable_after = min(EVICTABLE_AFTER_SECONDS, limits.idle_timeout / 2)

    # The connection.

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _Flow(transport, self._reading_resumed)
        if len(self.connections) > self._limits.max_connections and not self._make_room():
            self._phase = _CLOSING
            transport.close()
            return
        self._set_deadline(self._limits.idle_timeout)
        self._become_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._crowd.idle.pop(self, None)
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def _make_room(self) -> bool:
        """Closes the connection that has waited longest without a request in progress, if it
        has waited at least EVICTABLE_AFTER_SECONDS: False when there is none such."""
        idle = self._crowd.idle
        oldest = next(iter(idle), None)
        now = self.loop.time()
        made_room = oldest is not None and now - oldest._idle_since >= self._evictable_after
        self._crowd.note(now, self._limits.max_connections, made_room=made_room)
        if oldest is None or not made_room:
            return False
        del idle[oldest]
        oldest._phase = _CLOSING
        oldest.transport.close()
        return True

    def _become_idle(self) -> None:
        self._idle_since = self.loop.time()
        self._crowd.idle[self] = None

    def data_received(self, data: bytes) -> None:
        while True:
            if self._phase == _CLOSING:
                self._linger(len(data))
                return
            if self._phase in (_WAITING, _ANSWERING):
                self._begin_head()
            room = self._limits.max_head_bytes - self._unparsed
            if len(data) <= room:
                self._unparsed += len(data)
                super().data_received(data)
                return
            # More than may come before the parser's next step: it gets only that much, so
            # that it never gathers more of a head (or of a trailer) than the limit.
            progress = self._progress
            self._unparsed += room
            super().data_received(data[:room])
            if self._phase == _CLOSING or self.transport.is_closing():
                return
            if self._progress == progress:
                self._over_the_size_limit()
                return
            data = data[room:]

    # The parser's callbacks.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase != _HEAD:  # a pipelined request, begun in the same read as the last
            self._begin_head()

    def on_headers_complete(self) -> None:
        self._crowd.idle.pop(self, None)
        super().on_headers_complete()
        self._phase = _BODY
        self._progress += 1
        self._unparsed = 0
        self._set_deadline(self._limits.body_timeout)

    def on_body(self, body: bytes) -> None:
        self._progress += 1
        self._unparsed = 0
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._progress += 1
        if self.cycle.response_complete:  # answered before its body ended: idle from now
            self._phase = _WAITING
            self._set_deadline(self._limits.idle_timeout)
            self._become_idle()
        else:
            self._phase = _ANSWERING
            self._deadline = None

    def on_response_complete(self) -> None:
        if self._phase == _CLOSING:  # see _close_after_response
            self.transport.close()
        super().on_response_complete()
        if self._phase == _ANSWERING and not self._answer_under_way():
            self._phase = _WAITING
            self._set_deadline(self._limits.idle_timeout)
            self._become_idle()

    # The limits.

    def _begin_head(self) -> None:
        self._phase = _HEAD
        self._progress += 1
        self._unparsed = 0
        self._set_deadline(self._limits.head_timeout)

    def _answer_under_way(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _set_deadline(self, seconds: float) -> None:
        at = self.loop.time() + seconds
        self._deadline = at
        if at < self._timer_at:  # else the armed timer fires first and moves on to ``at``
            if self._timer is not None:
                self._timer.cancel()
            self._arm(at)

    def _arm(self, at: float) -> None:
        self._timer_at = at
        self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        deadline = self._deadline
        if deadline is None or self.transport.is_closing():
            return
        if self.loop.time() < deadline:
            self._arm(deadline)
            return
        self._deadline = None
        phase = self._phase
        if phase in (_WAITING, _CLOSING):  # idle too long, or done dropping what comes
            self.transport.close()
        elif self.flow.read_paused:  # the server stopped reading, not the client
            self._reading_resumed()
        elif phase == _HEAD:
            seconds = self._limits.head_timeout
            self._give_up(
                REQUEST_TIMEOUT, f"The request head was not received within {seconds:g} s."
            )
        elif phase == _BODY:
            seconds = self._limits.body_timeout
            self._give_up(
                REQUEST_TIMEOUT, f"The request body was not received within {seconds:g} s."
            )

    def _reading_resumed(self) -> None:
        """The server reads again (or still does not): the head or body limit starts again,
        since the client could not send while the server did not read."""
        if self._phase == _HEAD:
            self._set_deadline(self._limits.head_timeout)
        elif self._phase == _BODY:
            self._set_deadline(self._limits.body_timeout)

    def _over_the_size_limit(self) -> None:
        limit = self._limits.max_head_bytes
        part = "head" if self._phase == _HEAD else "chunked body's framing (extensions, trailer)"
        self._give_up(REQUEST_HEADER_FIELDS_TOO_LARGE, f"The request {part} is over {limit} bytes.")

    def _give_up(self, kind: ProblemKind, detail: str) -> None:
        """Stops reading: answers ``kind`` when nothing else is being answered on this
        connection, else lets that answer end first; then closes the connection."""
        cycle = self.cycle  # in a body: this request's; in a head: the one before, if any
        answered: int | None = None
        if self.pipeline or (self._phase == _HEAD and self._answer_under_way()):
            # An earlier request is being answered (this one, if read, is queued behind it).
            self._close_after_response()
        elif self._phase == _HEAD:
            answered = kind.status
            self._answer_and_close(kind, detail)
        elif cycle.response_complete:  # answered before its body came whole
            self._answer_and_close(None, detail)
        elif cycle.response_started:
            self._close_after_response()
        else:
            # The application waits for the rest of the body: it is told that the client has
            # gone, and whatever it answers is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
            answered = kind.status
            self._answer_and_close(kind, detail)
        logger.info(
            "request cut off: %s",
            detail,
            extra={"fields": {"client": self._client_host(), "status": answered}},
        )

    def _close_after_response(self) -> None:
        """A response is being made on this connection: nothing is added to it, nothing more
        is read, and the connection closes once it is sent (requests queued behind it are
        dropped: a client that pipelines retries them on a new connection)."""
        self._phase = _CLOSING
        self._deadline = None
        self.flow.pause_reading()

    def _answer_and_close(self, kind: ProblemKind | None, detail: str) -> None:
        """``kind`` as the answer (none when None), then the connection closed once what the
        client still sends has been dropped for a while (LINGER_SECONDS)."""
        self._phase = _CLOSING
        if kind is not None:
            self.transport.write(self._problem(kind, detail))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._set_deadline(LINGER_SECONDS)

    def _linger(self, size: int) -> None:
        self._lingered += size
        if self._lingered > LINGER_BYTES:
            self.transport.close()

    def _problem(self, kind: ProblemKind, detail: str) -> bytes:
        body = json.dumps(kind.body(detail)).encode()
        lines = [f"HTTP/1.1 {kind.status} {HTTPStatus(kind.status).phrase}".encode()]
        lines += [name + b": " + value for name, value in self.server_state.default_headers]
        lines += [
            b"content-type: " + PROBLEM_JSON.encode(),
            b"content-length: " + str(len(body)).encode(),
            b"connection: close",
        ]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    def _client_host(self) -> str | None:
        return self.client[0] if self.client else None


def guarded_http_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """What to give uvicorn as ``http=``: GuardedHttpToolsProtocol bound to ``limits``.

    uvicorn calls ``http`` with its keyword arguments to make each connection's protocol, and
    sends its configuration to each worker process by pickling it: a partial of a module-level
    class pickles, where a class made here would not. Its annotation asks for a class."""
    return cast("type[asyncio.Protocol]", partial(GuardedHttpToolsProtocol, limits=limits))


def fit_open_files(limits: ConnectionLimits) -> tuple[ConnectionLimits, str | None]:
    """``limits`` as this process's limit on open files allows them, and what was changed.

    Raises the soft limit (the workers this process starts inherit it) to what
    ``max_connections`` needs, as far as the hard limit allows; when that is not enough,
    lowers ``max_connections`` to what fits instead: a worker out of file descriptors accepts
    nothing, not even the probes, and cannot open a database connection."""
    needed = limits.max_connections + FILES_BESIDES_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return limits, None
    raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if raised > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised >= needed:
        return limits, None
    fitting = max(1, raised - FILES_BESIDES_CONNECTIONS)
    return replace(limits, max_connections=fitting), (
        f"PAYMENT_MAX_CONNECTIONS={limits.max_connections} needs {needed} open files per"
        f" worker, and this process may open {raised}: {fitting} connections per worker at"
        " most; raise the limit (ulimit -n, or the container's nofile limit) for more"
    )
