"""A burst of slow clients: sockets that hold a connection to the service while sending little
or nothing, a third of each kind:

- ``silent``: connects and never sends a byte (the service's idle limit should close it);
- ``slow head``: a request head, one byte a second, never finished (the head's time limit);
- ``slow body``: a whole head for a 64 KiB body, half of the body at once, then one byte a
  second (the body's time limit).

Each is kept until the service closes it or ``hold_seconds`` pass; when the service closed
it, and after how long, is what the burst reports.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from chaos.service import HOST

SILENT = "silent"
SLOW_HEAD = "slow head"
SLOW_BODY = "slow body"
KINDS = (SILENT, SLOW_HEAD, SLOW_BODY)
TRICKLE_EVERY_SECONDS = 1.0
BODY_BYTES = 65_536
OPEN_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class SlowClient:
    kind: str
    cut_after: float | None
    """Seconds from its connection to the service's closing it; None: still open at the end
    of the burst, or never opened (``opened`` False)."""
    opened: bool = True


def _head(kind: str) -> bytes:
    if kind == SLOW_HEAD:  # far longer than any burst trickles
        return b"POST /pay HTTP/1.1\r\nHost: chaos\r\nX-Slow: " + b"a" * 4096
    return (
        f"POST /pay HTTP/1.1\r\nHost: chaos\r\nContent-Type: application/json\r\n"
        f"Content-Length: {BODY_BYTES}\r\n\r\n"
    ).encode() + b" " * (BODY_BYTES // 2)


async def _one(port: int, kind: str, hold_seconds: float) -> SlowClient:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, port), OPEN_TIMEOUT_SECONDS
        )
    except (OSError, TimeoutError):
        return SlowClient(kind, None, opened=False)
    opened = time.monotonic()
    pending = _head(kind)
    if kind == SLOW_BODY:  # the head and half the body at once
        writer.write(pending)
        pending = b" " * (BODY_BYTES - BODY_BYTES // 2)
    try:
        while time.monotonic() - opened < hold_seconds:
            if kind != SILENT and pending:
                writer.write(pending[:1])
                pending = pending[1:]
            try:
                said = await asyncio.wait_for(reader.read(4096), TRICKLE_EVERY_SECONDS)
            except TimeoutError:
                continue
            if not said:  # closed by the service (an answer such as 408 may come first)
                return SlowClient(kind, time.monotonic() - opened)
    except OSError:
        return SlowClient(kind, time.monotonic() - opened)
    finally:
        writer.transport.abort()
    return SlowClient(kind, None)


async def slow_burst(port: int, count: int, hold_seconds: float) -> list[SlowClient]:
    """``count`` slow clients at once, a third of each kind; what became of each."""
    kinds = [KINDS[i % len(KINDS)] for i in range(count)]
    return list(await asyncio.gather(*(_one(port, kind, hold_seconds) for kind in kinds)))
