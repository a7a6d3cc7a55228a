"""A service's /livez, /readyz and /metrics asked in turn, and timed, by a process of its own:
the timings are the service's, not those of a test process busy with many client threads.

``Probes(base_url, folder)``, as a context manager, runs
``python -m tests.support.probe_sampler BASE_URL OUTPUT``, which writes one line per answer to
OUTPUT: path, status, when it was asked (``time.monotonic()``, one clock for every process) and
how long the answer took, in seconds; SIGTERM stops it.
"""

from __future__ import annotations

import http.client
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

PATHS = ("/livez", "/readyz", "/metrics")
PAUSE_SECONDS = 0.03


STOP_TIMEOUT_SECONDS = 30.0


class Probes:
    """The probes asked for the length of the block; then ``between()`` tells the answers."""

    def __init__(self, base_url: str, folder: Path) -> None:
        self._base_url = base_url
        self._output = folder / "probes.txt"
        self._process: subprocess.Popen[bytes] | None = None
        self.answers: dict[str, list[tuple[float, int, float]]] = {}
        """By path: when each was asked (monotonic), its status and how long it took."""

    def __enter__(self) -> Probes:
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.probe_sampler",
                self._base_url,
                str(self._output),
            ],
            stdin=subprocess.DEVNULL,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None
        self._process.terminate()
        self._process.wait(timeout=STOP_TIMEOUT_SECONDS)
        for line in self._output.read_text().splitlines():
            path, status, started, took = line.split()
            self.answers.setdefault(path, []).append((float(started), int(status), float(took)))

    def between(self, path: str, start: float, end: float) -> list[tuple[int, float]]:
        """The status and time of each answer to ``path`` asked and given between the two
        moments."""
        return [
            (s, took) for at, s, took in self.answers.get(path, []) if start <= at <= end - took
        ]


def main(base_url: str, output: Path) -> None:
    stopping = False

    def stop(number: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
    with output.open("w", buffering=1) as lines:
        while not stopping:
            for path in PATHS:
                started = time.monotonic()
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                took = time.monotonic() - started
                lines.write(f"{path} {response.status} {started} {took}\n")
                time.sleep(PAUSE_SECONDS)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
