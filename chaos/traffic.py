"""The soak's traffic: a fixed number of client tasks, each sending one request after another,
chosen at random by ``MIX``, until told to stop.

- Payments of fresh orders, each order paid by one client: with an ``Idempotency-Key`` or
  without; and concurrent duplicates, the same keyed payment sent by three clients at once.
  Each is sent again on no answer, a cut connection, a 503 or ``409 idempotency_key_in_use``,
  with the same key, until a final answer or ``INTENT_SECONDS``: an impatient client, which
  retries sooner than ``Retry-After`` asks.
- Wrong amounts and bad bodies (not JSON, wrong media types, UTF-16, a byte-order mark, a
  huge exponent, too large, ...) for the untouchable orders: each must be refused.
- Reads: payments answered before (or ids that do not exist), and orders' payments.
- While a fault holds a hot order's row lock, ``storm_clients`` of the clients pay that order
  instead, each payment with a key of its own, retried as above: a retry storm on one order.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from decimal import Decimal

from chaos.database import OrderRanges, total_of
from chaos.http import Client
from chaos.ledger import (
    BAD_BODY,
    DUPLICATE,
    HOT,
    KEYED,
    READ_ORDER,
    READ_PAYMENT,
    UNKEYED,
    WRONG_AMOUNT,
    Intent,
    Ledger,
)

MIX = (
    (KEYED, 34),
    (UNKEYED, 24),
    (DUPLICATE, 6),
    (WRONG_AMOUNT, 8),
    (BAD_BODY, 12),
    (READ_PAYMENT, 8),
    (READ_ORDER, 8),
)
DUPLICATES = 3
INTENT_SECONDS = 30.0
INTENT_ATTEMPTS = 100
BACKOFF_SECONDS = (0.05, 0.3)
JSON = {"Content-Type": "application/json"}
LARGE_BODY_BYTES = 70 * 1024
MISSING_PAYMENT_IDS = (1_000_000_000, 2_000_000_000)


def bad_bodies(order_id: int) -> list[tuple[str, dict[str, str], bytes]]:
    """Requests to pay ``order_id`` that must be refused, whatever the order: (name, headers,
    body). Several carry the order's right amount: only their form is wrong."""
    valid = f'{{"order_id": {order_id}, "amount": "{total_of(order_id)}"}}'
    return [
        ("not JSON", JSON, valid[:-3].encode()),
        ("a JSON array", JSON, f"[{order_id}]".encode()),
        ("no amount", JSON, f'{{"order_id": {order_id}}}'.encode()),
        ("a negative amount", JSON, f'{{"order_id": {order_id}, "amount": "-5.00"}}'.encode()),
        ("three decimals", JSON, f'{{"order_id": {order_id}, "amount": "1.001"}}'.encode()),
        ("an unknown field", JSON, (valid[:-1] + ', "tip": 1}').encode()),
        ("a huge exponent", JSON, f'{{"order_id": {order_id}, "amount": 1e999999999}}'.encode()),
        ("text/plain", {"Content-Type": "text/plain"}, valid.encode()),
        ("a form", {"Content-Type": "application/x-www-form-urlencoded"}, valid.encode()),
        ("no content type", {}, valid.encode()),
        ("UTF-16", JSON, valid.encode("utf-16")),
        ("a byte-order mark", JSON, b"\xef\xbb\xbf" + valid.encode()),
        ("over 64 KiB", JSON, valid.encode().ljust(LARGE_BODY_BYTES)),
    ]


class Traffic:
    def __init__(
        self,
        client: Client,
        orders: OrderRanges,
        ledger: Ledger,
        *,
        clients: int,
        storm_clients: int,
        seed: int,
    ) -> None:
        self._client = client
        self._orders = orders
        self.ledger = ledger
        self._clients = clients
        self._storm_clients = storm_clients
        self._seed = seed
        self._run_token = secrets.token_hex(3)
        self._keys = 0
        self._next_fresh = 1
        self._stopping = False
        self.hot_order: int | None = None
        """Set by the hot-order fault while it holds that order's row lock."""
        self.exhausted = False

    def take_fresh(self) -> int | None:
        """A fresh order no request was sent for; None when none is left."""
        if self._next_fresh > self._orders.fresh:
            self.exhausted = True
            return None
        order_id, self._next_fresh = self._next_fresh, self._next_fresh + 1
        return order_id

    async def run(self, until: float, drain_seconds: float) -> None:
        """The clients until ``until`` (monotonic); then each finishes what it was doing,
        within ``drain_seconds``, and is cancelled past it."""
        tasks = [asyncio.ensure_future(self._run_client(i)) for i in range(self._clients)]
        try:
            await asyncio.sleep(max(0.0, until - time.monotonic()))
            self._stopping = True
            _, pending = await asyncio.wait(tasks, timeout=drain_seconds)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if pending:
            self.ledger.unresolved.add(
                f"{len(pending)} client(s) still busy {drain_seconds:g} s after the traffic stopped"
            )

    async def _run_client(self, index: int) -> None:
        rng = random.Random(self._seed * 1000 + index)
        kinds, weights = zip(*MIX, strict=True)
        while not self._stopping:
            hot = self.hot_order
            if hot is not None and index < self._storm_clients:
                await self._pay(Intent(HOT, hot, _amount(hot, rng), self._new_key()), rng)
                continue
            kind = rng.choices(kinds, weights)[0]
            await self._one(kind, rng)

    async def _one(self, kind: str, rng: random.Random) -> None:
        if kind in (KEYED, UNKEYED, DUPLICATE):
            order_id = self.take_fresh()
            if order_id is None:  # every fresh order is taken: reads only from now on
                kind = READ_ORDER
            else:
                key = None if kind == UNKEYED else self._new_key()
                amount = _amount(order_id, rng)
                if kind == DUPLICATE:
                    copies = [Intent(DUPLICATE, order_id, amount, key) for _ in range(DUPLICATES)]
                    await asyncio.gather(*(self._pay(intent, rng) for intent in copies))
                else:
                    await self._pay(Intent(kind, order_id, amount, key), rng)
                return
        if kind == WRONG_AMOUNT:
            await self._wrong_amount(rng)
        elif kind == BAD_BODY:
            await self._bad_body(rng)
        elif kind == READ_PAYMENT:
            recent = self.ledger.recent_payments
            payment_id = rng.choice(recent) if recent else rng.randint(*MISSING_PAYMENT_IDS)
            outcome = await self._client.request("GET", f"/payments/{payment_id}")
            self.ledger.record(READ_PAYMENT, outcome)
        else:
            order_id = rng.randint(1, self._orders.last_untouchable)
            outcome = await self._client.request("GET", f"/orders/{order_id}/payments")
            self.ledger.record(READ_ORDER, outcome)

    async def _pay(self, intent: Intent, rng: random.Random) -> None:
        """``intent`` sent until a final answer, or its bound."""
        headers = JSON if intent.key is None else {**JSON, "Idempotency-Key": intent.key}
        body = intent.body()
        give_up_at = time.monotonic() + INTENT_SECONDS
        outcome = None
        try:
            while True:
                intent.attempts += 1
                outcome = await self._client.request("POST", "/pay", body=body, headers=headers)
                self.ledger.record(intent.kind, outcome)
                if self.ledger.payment_answered(intent, outcome):
                    self.ledger.finished(intent, outcome)
                    return
                if time.monotonic() >= give_up_at or intent.attempts >= INTENT_ATTEMPTS:
                    self.ledger.gave_up(intent, outcome, "no final answer")
                    return
                await asyncio.sleep(rng.uniform(*BACKOFF_SECONDS))
        except asyncio.CancelledError:
            self.ledger.gave_up(intent, outcome, "cancelled at the end of the drain")
            raise

    async def _wrong_amount(self, rng: random.Random) -> None:
        order_id = self._untouchable(rng)
        amount = f'"{total_of(order_id) + Decimal("0.01")}"'
        intent = Intent(WRONG_AMOUNT, order_id, amount, None)
        headers = JSON if rng.random() < 0.5 else {**JSON, "Idempotency-Key": self._new_key()}
        outcome = await self._client.request("POST", "/pay", body=intent.body(), headers=headers)
        self.ledger.record(WRONG_AMOUNT, outcome)

    async def _bad_body(self, rng: random.Random) -> None:
        order_id = self._untouchable(rng)
        name, headers, body = rng.choice(bad_bodies(order_id))
        outcome = await self._client.request("POST", "/pay", body=body, headers=headers)
        self.ledger.record(BAD_BODY, outcome, name)

    def _untouchable(self, rng: random.Random) -> int:
        return rng.randint(self._orders.first_untouchable, self._orders.last_untouchable)

    def _new_key(self) -> str:
        self._keys += 1
        return f"chaos-{self._run_token}-{self._keys}"


def _amount(order_id: int, rng: random.Random) -> str:
    """The order's total as JSON text: a number or a string, at random."""
    total = total_of(order_id)
    return str(total) if rng.random() < 0.5 else f'"{total}"'
