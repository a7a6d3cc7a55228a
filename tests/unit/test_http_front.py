"""The front every HTTP request passes (``RequestFront``), as a plain ASGI layer: what it does
when the server cuts a request short, and what it leaves alone."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payment.adapters.sqlalchemy.engine import PoolStatus
from payment.entrypoints.http.front import RequestFront
from payment.entrypoints.http.lifecycle import Lifecycle
from payment.entrypoints.http.observe import Metrics
from payment.entrypoints.http.routes import router

pytestmark = pytest.mark.anyio

ACCESS = "payment.access"


def http_scope(path: str = "/pay", *, request_id: str | None = None) -> Scope:
    headers = [(b"content-type", b"application/json")]
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def nothing_more() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


@dataclass
class Server:
    """What the front sent back to the server."""

    sent: list[Message] = field(default_factory=list)

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        [start] = [m for m in self.sent if m["type"] == "http.response.start"]
        status: int = start["status"]
        return status

    @property
    def headers(self) -> dict[str, str]:
        [start] = [m for m in self.sent if m["type"] == "http.response.start"]
        return {name.decode(): value.decode() for name, value in start["headers"]}

    def body(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if "body" in m))


class Stuck:
    """An application that takes forever, having started its answer or not."""

    def __init__(self, *, answer_started: bool = False) -> None:
        self.answer_started = answer_started
        self.running = asyncio.Event()
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if self.answer_started:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        self.running.set()
        await asyncio.Event().wait()


@dataclass
class Front:
    """A front over ``app``, with its own lifecycle and metrics, and a pool that reports
    one more connection in use at each request."""

    app: ASGIApp
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    metrics: Metrics = field(default_factory=Metrics)
    reports: list[PoolStatus] = field(default_factory=list)

    def report(self) -> PoolStatus:
        self.reports.append(PoolStatus(size=10, in_use=len(self.reports), waiting=0))
        return self.reports[-1]

    def front(self) -> RequestFront:
        return RequestFront(
            self.app,
            lifecycle=self.lifecycle,
            metrics=self.metrics,
            pool_report=self.report,
            routes=router.routes,
        )

    async def cut_short(
        self, scope: Scope, server: Server, *, stopping: bool
    ) -> asyncio.Task[None]:
        """Run a request until the application is busy with it, then cancel it as the server
        does when its graceful stop times out (or when the client goes away)."""
        assert isinstance(self.app, Stuck)
        task = asyncio.create_task(self.front()(scope, nothing_more, server.send))
        await asyncio.wait_for(self.app.running.wait(), timeout=10)
        if stopping:
            self.lifecycle.stop()
        task.cancel()
        await asyncio.wait({task}, timeout=10)
        return task


@pytest.fixture
def captured(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> pytest.LogCaptureFixture:
    # configure_logging stops the service's loggers from propagating; the capture needs it.
    monkeypatch.setattr(logging.getLogger("payment"), "propagate", True)
    caplog.set_level(logging.INFO, logger=ACCESS)
    return caplog


def access_lines(captured: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [vars(record)["fields"] for record in captured.records if record.name == ACCESS]


async def test_a_request_cut_short_by_the_stop_is_answered_503_telling_to_retry_with_the_key(
    captured: pytest.LogCaptureFixture,
) -> None:
    front, server = Front(Stuck()), Server()

    task = await front.cut_short(http_scope(request_id="trace-cut"), server, stopping=True)

    assert task.done()
    assert not task.cancelled()
    assert server.status == 503
    assert server.headers["x-request-id"] == "trace-cut"
    assert server.headers["connection"] == "close"
    assert int(server.headers["retry-after"]) >= 1
    problem = server.body()
    assert problem["code"] == "service_unavailable"
    assert "Idempotency-Key" in problem["detail"]
    [line] = access_lines(captured)
    assert (line["request_id"], line["route"], line["status"]) == ("trace-cut", "/pay", 503)
    assert line["outcome"] is None


async def test_a_request_cut_short_while_not_stopping_is_cancelled_and_not_answered() -> None:
    front, server = Front(Stuck()), Server()

    task = await front.cut_short(http_scope(), server, stopping=False)

    assert task.cancelled()
    assert server.sent == []


async def test_a_request_cut_short_after_its_answer_started_is_cancelled_not_answered_again() -> (
    None
):
    front, server = Front(Stuck(answer_started=True)), Server()

    task = await front.cut_short(http_scope(), server, stopping=True)

    assert task.cancelled()
    assert [m["type"] for m in server.sent] == ["http.response.start"]
    assert server.status == 200


async def test_the_request_id_is_in_the_request_state_for_the_application() -> None:
    app, server = Stuck(), Server()

    await Front(app).cut_short(http_scope(request_id="trace-state"), server, stopping=False)

    [scope] = app.scopes
    assert scope["state"]["request_id"] == "trace-state"


async def test_each_request_is_counted_and_logged_and_refreshes_the_pool_gauges(
    captured: pytest.LogCaptureFixture,
) -> None:
    async def accepted(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    front = Front(accepted)

    for _ in range(3):
        await front.front()(http_scope(), nothing_more, Server().send)

    registry = front.metrics.registry
    assert len(front.reports) == 3
    assert registry.get_sample_value("payment_db_pool_connections_in_use") == 2
    assert [line["status"] for line in access_lines(captured)] == [202, 202, 202]
    labels = {"route": "/pay", "method": "POST", "status": "202"}
    assert registry.get_sample_value("payment_http_requests_total", labels) == 3


async def test_other_than_http_passes_through_untouched() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    stopping = Lifecycle()
    stopping.stop()
    front = RequestFront(app, lifecycle=stopping, metrics=Metrics(), pool_report=None)

    await front(scope, nothing_more, Server().send)

    assert seen == [{"type": "lifespan", "asgi": {"version": "3.0"}}]
