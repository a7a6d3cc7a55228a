"""A network path to PostgreSQL that a test can make go silent, as a partition would.

``SilenceableLink`` is a TCP proxy on loopback in front of a PostgreSQL server (its Unix socket
or its TCP port). ``silence()`` makes it forward nothing either way while closing nothing: the
service's connections stay open and get no answer, as when a link is blackholed. The bytes
sent meanwhile are held, and delivered when ``restore()`` makes it speak again, as TCP
retransmissions would once a partition heals; so is the end of a connection its client closed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.engine import URL

HOST = "127.0.0.1"
T = TypeVar("T")
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where the link leads: a Unix socket path, or a TCP host and port."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    @classmethod
    def of(cls, url: URL) -> Upstream:
        """The server ``url`` names (libpq's rules: a host that is a folder is a socket's)."""
        host = url.host or str(url.query.get("host", "")) or "/tmp"  # noqa: S108 - libpq's default
        port = url.port or 5432
        if host.startswith("/"):
            return cls(path=f"{host}/.s.PGSQL.{port}")
        return cls(host=host, port=port)

    def open(self) -> Awaitable[Streams]:
        if self.path is not None:
            return asyncio.open_unix_connection(self.path)
        return asyncio.open_connection(self.host, self.port)


class SilenceableLink:
    """A proxy on ``127.0.0.1:port`` to ``upstream``, run by a thread of its own; use it as a
    context manager (``SilenceableLink.to(url)``)."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._speaking = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.opened = 0
        """Connections accepted so far."""
        self.ended_by_client: list[float] = []
        """When (``time.monotonic()``) each connection was closed by its client."""
        self.port = 0

    @classmethod
    @contextmanager
    def to(cls, url: URL) -> Iterator[SilenceableLink]:
        link = cls(Upstream.of(url))
        link.start()
        try:
            yield link
        finally:
            link.close()

    def url_through(self, url: URL) -> URL:
        """``url`` with the link in place of its server."""
        query = {name: value for name, value in url.query.items() if name != "host"}
        return url.set(host=HOST, port=self.port, query=query)

    def start(self) -> None:
        self._thread.start()
        self._call(self._speaking.set)
        self._server = self._run(asyncio.start_server(self._serve, HOST, 0))
        self.port = self._server.sockets[0].getsockname()[1]

    def silence(self) -> None:
        """Forward nothing from now on, either way; close nothing."""
        self._call(self._speaking.clear)

    def restore(self) -> None:
        """Forward again, what was held first."""
        self._call(self._speaking.set)

    @contextmanager
    def silenced(self) -> Iterator[None]:
        """Silent for the length of the block, speaking again at its end however it ends."""
        self.silence()
        try:
            yield
        finally:
            self.restore()

    @property
    def open_connections(self) -> int:
        return len(self._writers) // 2

    def wait_until_closed(self, timeout: float) -> None:
        """Until every connection through the link has ended both ways."""
        deadline = time.monotonic() + timeout
        while self._writers:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.open_connections} connection(s) still open")
            time.sleep(0.02)

    def close(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with suppress(RuntimeError):
            self._run(shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def _call(self, action: Callable[[], object]) -> None:
        self._loop.call_soon_threadsafe(action)

    def _run(self, step: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await step

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result(timeout=10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        self._writers.add(writer)
        try:
            up_reader, up_writer = await self._upstream.open()
        except OSError:
            self._writers.discard(writer)
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pump(reader, up_writer, from_client=True),
            self._pump(up_reader, writer, from_client=False),
        )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, from_client: bool
    ) -> None:
        """Reads all the time (so a client's end is seen at once), forwards only while the
        link speaks, the end of the stream last."""
        held: asyncio.Queue[bytes] = asyncio.Queue()

        async def read() -> None:
            with suppress(OSError):
                while data := await reader.read(65536):
                    held.put_nowait(data)
            if from_client:
                self.ended_by_client.append(time.monotonic())
            held.put_nowait(b"")

        async def forward() -> None:
            try:
                while True:
                    data = await held.get()
                    await self._speaking.wait()
                    if not data:
                        break
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()
                self._writers.discard(writer)

        await asyncio.gather(read(), forward())
