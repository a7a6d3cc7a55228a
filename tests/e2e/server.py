"""The service as a real server process: `payment-service serve`, on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
PORT_ATTEMPTS = 3
STARTED_WORKER = "Application startup complete."
_INHERITED_PREFIXES = ("PAYMENT_", "ORDER_DB_")
_INHERITED_NAMES = {"DATABASE_URL"}


@dataclass(frozen=True, slots=True)
class RunningService:
    base_url: str
    pid: int
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def address(self) -> tuple[str, int]:
        """Host and port, for a connection made by hand."""
        host, _, port = self.base_url.removeprefix("http://").rpartition(":")
        return host, int(port)

    def wait_for_exit(self, timeout: float) -> int:
        """The server's exit status once it has exited; AssertionError when it still runs
        ``timeout`` seconds later."""
        if self.process is None:
            raise RuntimeError("only a server started by running_service can be waited for")
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the server still runs {timeout} s later") from None

    def worker_pids(self) -> list[int]:
        """The worker processes of a server started with several workers (Linux only):
        the children the uvicorn master spawned to serve."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        workers = []
        for child in children:
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:  # a child that has just exited
                continue
            if b"spawn_main" in command:
                workers.append(int(child))
        return workers


class ServiceDidNotStart(Exception):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _command() -> list[str]:
    script = Path(sys.executable).parent / "payment-service"
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "payment.entrypoints.cli", "serve"]


def _environment(settings: Mapping[str, str], port: int) -> dict[str, str]:
    """The parent's environment without any service setting of its own, then ``settings``."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_INHERITED_PREFIXES) and name not in _INHERITED_NAMES
    }
    environment.update(
        {
            "PAYMENT_HOST": HOST,
            "PAYMENT_PORT": str(port),
            "PAYMENT_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    environment.update(settings)
    return environment


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL to the whole process group after a bound."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_SECONDS)


def _wait_until_up(
    process: subprocess.Popen[bytes], base_url: str, log: Path, *, probe: str, workers: int
) -> None:
    """Until ``probe`` answers 200 and every worker has started, within a bound."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    with httpx2.Client(base_url=base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServiceDidNotStart(f"the server exited with status {process.returncode}")
            try:
                answered = client.get(probe).status_code == 200
            except httpx2.TransportError:
                answered = False
            if answered and log.read_text(errors="replace").count(STARTED_WORKER) >= workers:
                return
            time.sleep(0.1)
    raise ServiceDidNotStart(
        f"{probe} did not answer 200 from {workers} worker(s) in {START_TIMEOUT_SECONDS} s"
    )


@contextmanager
def running_service(
    settings: Mapping[str, str], log_dir: Path, *, probe: str = "/readyz", workers: int = 1
) -> Iterator[RunningService]:
    """`payment-service serve` with ``settings`` added to its environment, up until the block
    ends. Fails the test with the server's output when it does not come up."""
    failures: list[str] = []
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        base_url = f"http://{HOST}:{port}"
        log = log_dir / f"server-{port}-{attempt}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                _command(),
                env=_environment({**settings, "PAYMENT_WORKERS": str(workers)}, port),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            try:
                _wait_until_up(process, base_url, log, probe=probe, workers=workers)
            except ServiceDidNotStart as error:
                _stop(process)
                text = log.read_text(errors="replace")
                failures.append(f"attempt {attempt} on port {port}: {error}\n{text}")
                if "address already in use" in text.lower():
                    continue
                break
            yield RunningService(base_url=base_url, pid=process.pid, log=log, process=process)
            return
        finally:
            _stop(process)
    pytest.fail("the payment service did not start:\n" + "\n".join(failures), pytrace=False)
