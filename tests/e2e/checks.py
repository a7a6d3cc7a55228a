"""What the end-to-end tests check again and again: problem bodies and the database's state."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx2
from sqlalchemy import Engine, text

from tests.support.observations import Observe as Observe
from tests.support.orders import broken_invariants

PROBLEM_MEMBERS = {"type", "title", "status", "detail", "code"}
LEAKS = (
    "traceback",
    'file "',
    "psycopg",
    "sqlalchemy",
    "postgresql://",
    "postgresql+",
    "select ",
    "insert into",
    "update orders",
    "password",
)


def assert_problem(
    response: httpx2.Response, status: int, code: str, *, extra: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem of ``status`` and ``code`` with exactly the standard
    members and ``extra``, and shows nothing of the inside. Returns the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert set(body) == PROBLEM_MEMBERS | extra, body
    assert body["status"] == status
    assert body["code"] == code
    assert all(isinstance(body[member], str) for member in ("type", "title", "detail", "code"))
    shown = response.text.lower()
    assert not [leak for leak in LEAKS if leak in shown], response.text
    return body


@dataclass(frozen=True, slots=True)
class StoredPayment:
    id: int
    order_id: int
    amount: Decimal
    status: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredOrder:
    id: int
    status: str
    total_price: Decimal
    paid_at: datetime | None


def stored_payments(engine: Engine) -> list[StoredPayment]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, order_id, amount, status, created_at FROM payments ORDER BY id")
        )
        return [StoredPayment(*row) for row in rows]


def stored_order(engine: Engine, order_id: int) -> StoredOrder:
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT id, status, total_price, paid_at FROM orders WHERE id = :id"),
            {"id": order_id},
        ).one()
        return StoredOrder(*row)


def assert_nothing_written(engine: Engine, *pending_order_ids: int) -> None:
    """No payment at all, and each of these orders still pending and unpaid."""
    assert stored_payments(engine) == []
    for order_id in pending_order_ids:
        order = stored_order(engine, order_id)
        assert (order.status, order.paid_at) == ("pending", None)
    assert broken_invariants(engine) == []


def wait_for(condition: Callable[[], bool], *, timeout: float, what: Callable[[], str]) -> float:
    """Poll ``condition`` until it holds; the seconds it took. AssertionError with ``what()``
    (asked only then, e.g. for the server's output) when it does not hold within ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what()}")
        time.sleep(0.05)
    return time.monotonic() - started


def log_lines(output: str) -> list[dict[str, Any]]:
    """Every line of a server's output as the JSON object it must be; AssertionError naming
    the first line that is not one."""
    lines: list[dict[str, Any]] = []
    for number, line in enumerate(output.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(parsed, dict), f"line {number} is not a JSON object: {line!r}"
        lines.append(parsed)
    return lines
