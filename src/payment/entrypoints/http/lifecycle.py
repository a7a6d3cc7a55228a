"""Whether the process is stopping, told by the stop signals."""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Lifecycle:
    """Whether the process is stopping. Once it is, ``/readyz`` answers 503 and no new
    request reaches a transaction; requests already in flight finish."""

    def __init__(self) -> None:
        self._stopping = threading.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()

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
