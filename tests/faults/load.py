"""A load of payments from several client threads, with every answer (or its absence) kept."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx2

JSON = {"Content-Type": "application/json"}
REPLAYED = "idempotent-replayed"
CLIENT_TIMEOUT_SECONDS = 30.0
"""Far above any bound the service promises: an answer this late is a hang."""


@dataclass(frozen=True, slots=True)
class PayCall:
    """One POST /pay: an order, its amount as raw JSON text, and an optional key."""

    order_id: int
    amount: str
    key: str | None = None

    def content(self) -> bytes:
        return f'{{"order_id": {self.order_id}, "amount": {self.amount}}}'.encode()

    def headers(self) -> dict[str, str]:
        return JSON if self.key is None else {**JSON, "Idempotency-Key": self.key}


@dataclass(frozen=True, slots=True)
class Answer:
    """What one call got: a response, or ``error`` when none came (connection refused, reset,
    timed out). ``started`` is on the ``time.monotonic()`` clock."""

    call: PayCall
    started: float
    elapsed: float
    response: httpx2.Response | None
    error: str | None = None

    @property
    def status(self) -> int | None:
        return None if self.response is None else self.response.status_code

    @property
    def replayed(self) -> bool:
        return self.response is not None and self.response.headers.get(REPLAYED) == "true"

    def payment_id(self) -> int:
        assert self.response is not None, self
        assert self.status == 200, (self, self.response.text)
        payment_id: int = self.response.json()["payment_id"]
        return payment_id


def pay(client: httpx2.Client, call: PayCall) -> Answer:
    started = time.monotonic()
    try:
        response = client.post("/pay", content=call.content(), headers=call.headers())
    except httpx2.TransportError as error:
        return Answer(call, started, time.monotonic() - started, None, repr(error))
    return Answer(call, started, time.monotonic() - started, response)


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.05,
) -> float:
    """Poll ``condition`` until it holds; the seconds it took. AssertionError naming ``what``
    (a callable is asked only then, e.g. for the server's output so far) when it does not
    hold within ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what() if callable(what) else what}")
        time.sleep(interval)
    return time.monotonic() - started


class PaymentLoad:
    """One thread per lane, each sending its lane's calls in turn, once each, pausing
    ``pause`` seconds between them, until its calls run out or ``stop()``. With
    ``stop_at_first_silence`` a lane ends at its first call that gets no answer."""

    def __init__(
        self,
        base_url: str,
        lanes: Sequence[Sequence[PayCall]],
        *,
        pause: float = 0.0,
        stop_at_first_silence: bool = False,
    ) -> None:
        self._base_url = base_url
        self._pause = pause
        self._stop_at_first_silence = stop_at_first_silence
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._answers: list[Answer] = []
        self._failures: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._run, args=(calls,), name=f"load-{n}", daemon=True)
            for n, calls in enumerate(lanes)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, *, timeout: float = CLIENT_TIMEOUT_SECONDS + 10) -> None:
        """Stop every lane after its current call, and wait for them all."""
        self._stopping.set()
        self.join(timeout=timeout)

    def join(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        running = [thread.name for thread in self._threads if thread.is_alive()]
        assert not running, f"load threads still running after {timeout} s: {running}"
        assert not self._failures, self._failures

    @property
    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)

    def count(self, accepts: Callable[[Answer], bool]) -> int:
        with self._lock:
            return sum(1 for answer in self._answers if accepts(answer))

    def _run(self, calls: Sequence[PayCall]) -> None:
        try:
            with httpx2.Client(base_url=self._base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
                for call in calls:
                    if self._stopping.is_set():
                        return
                    answer = pay(client, call)
                    with self._lock:
                        self._answers.append(answer)
                    if answer.response is None and self._stop_at_first_silence:
                        return
                    if self._pause:
                        self._stopping.wait(self._pause)
        except BaseException as error:  # reported by join(), not lost in the thread
            with self._lock:
                self._failures.append(error)
