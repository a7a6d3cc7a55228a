"""A TCP proxy on loopback that a test can cut, as a broker going away would, and restore.

    with TcpProxy.to("127.0.0.1", 5672) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        ...
        proxy.cut()        # every connection through it reset, new ones refused
        proxy.restore()    # accepting again, on the same port
        proxy.stall()      # connections stay open and nothing goes through, as on a lost link
        proxy.restore()    # what was held goes through, and so does the rest

It runs on an event loop and a thread of its own, so the code under test (on the test's loop)
sees a real peer going away, and the proxy keeps working whatever the test's loop is doing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

HOST = "127.0.0.1"
T = TypeVar("T")


class TcpProxy:
    """Forwards every connection made to ``127.0.0.1:port`` to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self.port = 0
        self.accepted = 0
        """Connections accepted so far (reconnections show here)."""

    @classmethod
    @contextmanager
    def to(cls, host: str, port: int) -> Iterator[TcpProxy]:
        proxy = cls(host, port)
        proxy._thread.start()
        try:
            proxy.restore()
            yield proxy
        finally:
            proxy.close()

    def cut(self) -> None:
        """Stop listening and reset every open connection, both sides."""
        self._run(self._cut())

    def stall(self) -> None:
        """Forward nothing either way from now on, and close nothing."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def restore(self) -> None:
        """Listen again (on the same port once one was chosen), and forward again."""
        self._run(self._listen())
        self._loop.call_soon_threadsafe(self._flowing.set)

    def close(self) -> None:
        async def shut() -> None:
            await self._cut()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with suppress(RuntimeError, TimeoutError):
            self._run(shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def _run(self, step: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(step, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, HOST, self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            self._writers.discard(writer)
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
