"""What the soak watches beside its traffic, each in a thread of its own so that the traffic's
event loop never delays it: ``/livez`` every 200 ms and ``/readyz`` every second, each on a new
connection as an orchestrator's probe is, with the time it took; and the resident memory of
every worker of the service, every second.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from chaos.service import HOST, Service, rss_mib

LIVEZ_EVERY_SECONDS = 0.2
READYZ_EVERY_SECONDS = 1.0
MEMORY_EVERY_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Probe:
    at: float
    """When it was sent, in seconds from the soak's start."""
    seconds: float
    status: int | None
    failure: str | None
    """'refused', 'cut' or 'timeout' when no status came."""


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    pid: int
    rss_mib: float


class Watch:
    """The probes and the memory samples, kept from ``start()`` to ``stop()``."""

    def __init__(self, service: Service, origin: float) -> None:
        self._service = service
        self._origin = origin
        self._stopped = threading.Event()
        self.livez: list[Probe] = []
        self.readyz: list[Probe] = []
        self.memory: list[Sample] = []
        self._threads = [
            threading.Thread(target=self._probe, args=("/livez", LIVEZ_EVERY_SECONDS, self.livez)),
            threading.Thread(
                target=self._probe, args=("/readyz", READYZ_EVERY_SECONDS, self.readyz)
            ),
            threading.Thread(target=self._sample_memory),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopped.set()
        for thread in self._threads:
            thread.join()

    def _every(self, interval: float) -> Iterator[float]:
        """Ticks ``interval`` apart until stopped; the time of each from the origin."""
        tick = time.monotonic()
        while not self._stopped.is_set():
            yield tick - self._origin
            tick += interval
            self._stopped.wait(max(0.0, tick - time.monotonic()))

    def _probe(self, path: str, interval: float, probes: list[Probe]) -> None:
        request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
        for _ in self._every(interval):
            started = time.monotonic()
            status, failure = _ask(self._service.port, request)
            probes.append(
                Probe(started - self._origin, time.monotonic() - started, status, failure)
            )

    def _sample_memory(self) -> None:
        for at in self._every(MEMORY_EVERY_SECONDS):
            for pid in self._service.worker_pids():
                rss = rss_mib(pid)
                if rss is not None:
                    self.memory.append(Sample(at, pid, rss))


def _ask(port: int, request: bytes) -> tuple[int | None, str | None]:
    """One request on a new connection: the answer's status, or why none came."""
    deadline = time.monotonic() + PROBE_TIMEOUT_SECONDS
    try:
        with socket.create_connection((HOST, port), timeout=PROBE_TIMEOUT_SECONDS) as connection:
            connection.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                connection.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = connection.recv(4096)
                if not chunk:
                    return None, "cut"
                head += chunk
    except TimeoutError:
        return None, "timeout"
    except ConnectionRefusedError:
        return None, "refused"
    except OSError:
        return None, "cut"
    try:
        return int(head.split(b" ", 2)[1]), None
    except (IndexError, ValueError):
        return None, "protocol"


@contextmanager
def watching(service: Service, origin: float) -> Iterator[Watch]:
    watch = Watch(service, origin)
    watch.start()
    try:
        yield watch
    finally:
        watch.stop()
