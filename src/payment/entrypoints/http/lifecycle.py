"""Whether the process is stopping, told by the stop signals."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
CUT_REQUESTS_GRACE_SECONDS = 2.0
"""How long the application's shutdown waits for the requests the server cut (the graceful
stop's time ran out) to unwind and send their 503: a statement cancelled in PostgreSQL, the
connection given back, the answer written."""


class Lifecycle:
    """Whether the process is stopping. Once it is, ``/readyz`` answers 503 and no new
    request reaches a transaction; requests already in flight finish."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self.in_flight = 0
        """HTTP requests entered and not yet answered and logged (kept by ``RequestFront``,
        on the event loop)."""

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()

    async def requests_ended(self, timeout: float = CUT_REQUESTS_GRACE_SECONDS) -> None:
        """Until no request is in flight, or ``timeout`` seconds. When the graceful stop's time
        runs out, the server cancels the requests still running and at once shuts the
        application down: without this wait, the process would end before a cancelled request
        has unwound (its statement cancelled in PostgreSQL) and answered its 503."""
        deadline = time.monotonic() + timeout
        while self.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def watch_stop_signals(self) -> None:
        """Mark the process stopping as soon as a stop signal arrives, then let the server's
        own handler (uvicorn's graceful shutdown) run. Only the main thread has signals."""
        if threading.current_thread() is not threading.main_thread():
            return
        for stop_signal in STOP_SIGNALS:
            previous = signal.getsignal(stop_signal)

            def on_signal(number: int, frame: FrameType | None, chained: object = previous) -> None:
                self.stop()
                if callable(chained):
                    chained(number, frame)

            signal.signal(stop_signal, on_signal)
