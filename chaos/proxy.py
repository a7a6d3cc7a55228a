"""The service's path to its database: a TCP proxy the soak controls.

PostgreSQL listens on a Unix socket only; the service reaches it through this proxy on
127.0.0.1, which forwards each connection to the socket. A *blackhole* stops forwarding in
both directions without closing anything, as a network partition does: bytes sent meanwhile
wait in the proxy's buffers, new connections are accepted but not carried on, and everything
flows again when the link is restored.

The proxy runs in a process of its own (``python -m chaos.proxy SOCKET``), so that the soak's
own load never slows the service's database round trips: it prints its port on its first
line of output, then SIGUSR1 blackholes the link, SIGUSR2 restores it and SIGTERM stops it.
``LinkProxy`` starts and drives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HOST = "127.0.0.1"
CHUNK = 65_536
STOP_TIMEOUT_SECONDS = 10.0


class LinkProxy:
    """The proxy's process, seen from the soak."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self._process = process
        self.port = port

    @classmethod
    @contextmanager
    def started(cls, socket_path: Path, log: Path) -> Iterator[LinkProxy]:
        """A proxy to ``socket_path`` until the block ends; stopped however it ends."""
        with log.open("ab") as errors:
            process = subprocess.Popen(  # noqa: S603 - our own module, no shell
                [sys.executable, "-m", "chaos.proxy", str(socket_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                start_new_session=True,
            )
        try:
            assert process.stdout is not None
            line = process.stdout.readline().decode(errors="replace")  # its port, or EOF
            if not line.strip().isdigit():
                raise RuntimeError(f"the proxy did not start: {log.read_text()[-2000:]}")
            yield cls(process, int(line))
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def blackhole(self) -> None:
        self._process.send_signal(signal.SIGUSR1)

    def restore(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGUSR2)


# The proxy's process.


class _Link:
    """Forwards while open; holds every byte while blackholed."""

    def __init__(self, socket_path: str) -> None:
        self._socket_path = socket_path
        self._open = asyncio.Event()
        self._open.set()
        self._tasks: set[asyncio.Task[None]] = set()

    def blackhole(self) -> None:
        self._open.clear()

    def restore(self) -> None:
        self._open.set()

    async def serve(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        """One client connection: carried to the socket once the link is open."""
        try:
            await self._open.wait()
            server_reader, server = await asyncio.open_unix_connection(self._socket_path)
        except OSError:  # PostgreSQL is down: the client sees its connection closed
            client.transport.abort()
            return
        upstream = asyncio.ensure_future(self._pipe(client_reader, server))
        downstream = asyncio.ensure_future(self._pipe(server_reader, client))
        try:
            await asyncio.wait((upstream, downstream), return_when=asyncio.FIRST_COMPLETED)
        finally:
            upstream.cancel()
            downstream.cancel()
            client.transport.abort()
            server.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                await self._open.wait()
                data = await reader.read(CHUNK)
                if not data:
                    return
                await self._open.wait()  # read just before a blackhole: held, not sent
                writer.write(data)
                await writer.drain()


async def _proxy(socket_path: str) -> None:
    link = _Link(socket_path)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, link.blackhole)
    loop.add_signal_handler(signal.SIGUSR2, link.restore)
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    loop.add_signal_handler(signal.SIGINT, stopped.set)
    server = await asyncio.start_server(link.serve, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    async with server:
        await stopped.wait()


def main() -> int:
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m chaos.proxy SOCKET_PATH\n")
        return 2
    try:
        import uvloop
    except ImportError:
        asyncio.run(_proxy(sys.argv[1]))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_proxy(sys.argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
