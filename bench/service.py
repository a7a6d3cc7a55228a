"""The service as it runs in production: ``payment-service serve``, in a process of its own.

Its settings are its defaults (INFO logs as JSON lines on standard error, the pool and
timeouts of the README) except the address, the worker count and DATABASE_URL: the path
measured is the real one. Its output goes to a file in the run's temporary folder. After
the runs, ``payment-service verify`` checks what they left in the database.

For the outbox's cost, the same service with its outbox write switched off is started from
the benchmark's own module (``bench/without_outbox.py``), with one worker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import process_seconds
from bench.results import Verification

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
PORT_ATTEMPTS = 3
VERIFY_TIMEOUT_SECONDS = 600
VERIFY_LINES_KEPT = 50
STARTED_WORKER = "Application startup complete."
WITHOUT_OUTBOX = "bench.without_outbox"
"""The module that serves with the outbox write switched off (one worker only)."""
_BENCH_ROOT = Path(__file__).resolve().parent.parent
_SERVICE_SETTINGS = ("PAYMENT_", "ORDER_DB_", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")


class ServiceDidNotStart(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Service:
    base_url: str
    pid: int
    workers: int
    outbox: bool = True
    """False: the outbox write switched off (``bench/without_outbox.py``)."""

    def memory(self) -> dict[str, object]:
        """Resident memory (VmRSS) of the master process and of each worker, in MiB. With
        one worker, uvicorn serves in the master process itself."""
        master = _rss_mib(self.pid)
        if self.workers == 1:
            return {"workers": 1, "master_rss_mib": master, "worker_rss_mib": [master]}
        return {
            "workers": self.workers,
            "master_rss_mib": master,
            "worker_rss_mib": [_rss_mib(pid) for pid in self._worker_pids()],
        }

    def cpu_seconds(self) -> float:
        """User plus system time of the processes that serve, so far: the workers uvicorn's
        master spawned, or the master itself when it serves alone."""
        return process_seconds([self.pid] if self.workers == 1 else self._worker_pids())

    def _worker_pids(self) -> list[int]:
        """The children uvicorn's master spawned to serve (Linux only)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        workers = []
        for child in children:
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:  # a child that has just exited
                continue
            if b"spawn_main" in command:
                workers.append(int(child))
        return sorted(workers)


@contextmanager
def running_service(
    database_url: str, *, workers: int, log: Path, outbox: bool = True
) -> Iterator[Service]:
    """The service on a free loopback port until the block ends; stopped even on failure.
    ``outbox`` False: with its outbox write switched off (``bench/without_outbox.py``)."""
    if not outbox and workers != 1:
        raise ValueError("the service without its outbox serves with one worker only")
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        process = _start(database_url, workers=workers, port=port, log=log, outbox=outbox)
        try:
            base_url = f"http://{HOST}:{port}"
            try:
                _wait_until_ready(process, base_url, log, workers)
            except ServiceDidNotStart:
                # Another program took the port between our probe and the server's bind.
                if attempt < PORT_ATTEMPTS and "address already in use" in _tail(log).lower():
                    continue
                raise
            yield Service(base_url=base_url, pid=process.pid, workers=workers, outbox=outbox)
            return
        finally:
            stop_process(process)


def verify_database(database_url: str, when: str) -> Verification:
    """``payment-service verify`` on the database: passed when it finds no broken invariant.
    Its output is kept up to ``VERIFY_LINES_KEPT`` lines."""
    finished = subprocess.run(  # noqa: S603 - our own console script, no shell
        _command("verify"),
        env=_environment(database_url),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=VERIFY_TIMEOUT_SECONDS,
        check=False,
    )
    lines = (finished.stdout + finished.stderr).strip().splitlines()
    if len(lines) > VERIFY_LINES_KEPT:
        lines[VERIFY_LINES_KEPT:] = [f"... {len(lines) - VERIFY_LINES_KEPT} more lines"]
    if finished.returncode != 0:
        lines.append(f"(exit status {finished.returncode})")
    return Verification(when, passed=finished.returncode == 0, output="\n".join(lines))


def _environment(database_url: str, **settings: str) -> dict[str, str]:
    """Ours, less every setting of the service, plus DATABASE_URL and ``settings``."""
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith(_SERVICE_SETTINGS)
    }
    environment.update({"DATABASE_URL": database_url, **settings})
    return environment


def _command(subcommand: str) -> list[str]:
    script = Path(sys.executable).with_name("payment-service")
    if script.exists():
        return [str(script), subcommand]
    return [sys.executable, "-m", "payment.entrypoints.cli", subcommand]


def _start(
    database_url: str, *, workers: int, port: int, log: Path, outbox: bool
) -> subprocess.Popen[bytes]:
    environment = _environment(
        database_url, PAYMENT_HOST=HOST, PAYMENT_PORT=str(port), PAYMENT_WORKERS=str(workers)
    )
    command = _command("serve") if outbox else [sys.executable, "-m", WITHOUT_OUTBOX, "serve"]
    with log.open("ab") as output:
        return subprocess.Popen(  # noqa: S603 - our own console script or module, no shell
            command,
            cwd=None if outbox else _BENCH_ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_ready(
    process: subprocess.Popen[bytes], base_url: str, log: Path, workers: int
) -> None:
    """Until /readyz answers 200 and every worker has started, within a bound."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceDidNotStart(
                f"the service exited with status {process.returncode}:\n{_tail(log)}"
            )
        started = log.read_text(errors="replace").count(STARTED_WORKER) >= workers
        if started and answers_ready(base_url):
            return
        time.sleep(0.2)
    raise ServiceDidNotStart(
        f"the service was not ready in {START_TIMEOUT_SECONDS} s:\n{_tail(log)}"
    )


def answers_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as answer:  # noqa: S310 - http to ourselves
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the graceful stop), then SIGKILL to its whole process group after a bound."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers left behind, if any
    process.wait(timeout=STOP_TIMEOUT_SECONDS)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]
