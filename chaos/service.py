"""The service under the soak: ``payment-service serve`` with two workers, in a process group
of its own, with its defaults except the address, the worker count and DATABASE_URL (the
proxy's). Its output goes to a file; it is stopped (SIGTERM, then SIGKILL to the whole group)
however the soak ends. ``payment-service verify`` runs the same way, on the database itself.
"""

from __future__ import annotations

import os
import random
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

HOST = "127.0.0.1"
WORKERS = 2
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
VERIFY_TIMEOUT_SECONDS = 300
STARTED_WORKER = "Application startup complete."
_SERVICE_SETTINGS = ("PAYMENT_", "ORDER_DB_", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")


class ServiceDidNotStart(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Service:
    port: int
    pid: int
    """uvicorn's master; the workers are its children."""
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def worker_pids(self) -> list[int]:
        """The workers uvicorn's master runs now (Linux)."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except FileNotFoundError:
            return []
        workers = []
        for child in children:
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:  # a child that has just exited
                continue
            if b"spawn_main" in command:
                workers.append(int(child))
        return sorted(workers)

    def kill_worker(self, rng: random.Random) -> int | None:
        """SIGKILL to one worker, chosen at random; its pid (None: no worker to kill)."""
        workers = self.worker_pids()
        if not workers:
            return None
        victim = rng.choice(workers)
        with suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        return victim

    def workers_started(self) -> int:
        """Workers that have finished starting since the service began (restarts included)."""
        return self.log.read_text(errors="replace").count(STARTED_WORKER)


def rss_mib(pid: int) -> float | None:
    """Resident memory (VmRSS) of ``pid`` in MiB; None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


@contextmanager
def running_service(database_url: str, *, log: Path) -> Iterator[Service]:
    """The service on a free loopback port until the block ends; stopped even on failure."""
    port = _free_port()
    environment = _environment(
        database_url, PAYMENT_HOST=HOST, PAYMENT_PORT=str(port), PAYMENT_WORKERS=str(WORKERS)
    )
    with log.open("ab") as output:
        process = subprocess.Popen(  # noqa: S603 - our own console script, no shell
            _command("serve"),
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        service = Service(port=port, pid=process.pid, log=log)
        _wait_until_ready(process, service)
        yield service
    finally:
        stop_process(process)


def verify(database_url: str) -> tuple[bool, str]:
    """``payment-service verify`` on the database: passed, and what it said."""
    try:
        finished = subprocess.run(  # noqa: S603 - our own console script, no shell
            _command("verify"),
            env=_environment(database_url),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=VERIFY_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"did not finish in {VERIFY_TIMEOUT_SECONDS} s"
    said = (finished.stdout + finished.stderr).strip()
    return finished.returncode == 0, said


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the graceful stop), then SIGKILL to its whole process group after a bound."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers left behind, if any
    process.wait(timeout=STOP_TIMEOUT_SECONDS)


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_ready(process: subprocess.Popen[bytes], service: Service) -> None:
    """Until /readyz answers 200 and every worker has started, within a bound."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceDidNotStart(
                f"the service exited with status {process.returncode}:\n{_tail(service.log)}"
            )
        if service.workers_started() >= WORKERS and _ready(service.base_url):
            return
        time.sleep(0.2)
    raise ServiceDidNotStart(
        f"the service was not ready in {START_TIMEOUT_SECONDS:g} s:\n{_tail(service.log)}"
    )


def _ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as answer:  # noqa: S310 - http to ourselves
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]
