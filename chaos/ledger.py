"""What the traffic saw: every request's end, second by second, and every payment's answers,
kept so that the checks can hold them against the database afterwards."""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field

from chaos.http import Outcome

# The kinds of request the traffic sends.
KEYED = "keyed payment"
UNKEYED = "payment without a key"
DUPLICATE = "concurrent duplicate"
HOT = "hot order payment"
WRONG_AMOUNT = "wrong amount"
BAD_BODY = "bad body"
READ_PAYMENT = "read a payment"
READ_ORDER = "read an order's payments"
PAYMENT_KINDS = (KEYED, UNKEYED, DUPLICATE, HOT)
HEALTHY_KINDS = (KEYED, UNKEYED, DUPLICATE)
"""Payments of orders nobody else contends for."""

# The classes of a request's end, for the timeline.
OK = "200"
CLIENT_ERROR = "4xx"
UNAVAILABLE = "503"
OTHER = "other status"
FAILED = "no answer"
CLASSES = (OK, CLIENT_ERROR, UNAVAILABLE, OTHER, FAILED)

SAMPLES_KEPT = 12


def status_class(outcome: Outcome) -> str:
    status = outcome.status
    if status is None:
        return FAILED
    if status == 200:
        return OK
    if 400 <= status < 500:
        return CLIENT_ERROR
    if status == 503:
        return UNAVAILABLE
    return OTHER


@dataclass(slots=True)
class Intent:
    """One payment a client means to make, sent until a final answer or its bound."""

    kind: str
    order_id: int
    amount: str
    """As JSON text: a number, or a string in quotes."""
    key: str | None
    attempts: int = 0
    ambiguous: bool = False
    """An attempt ended without telling whether it paid (no answer, 503, another 5xx)."""

    def body(self) -> bytes:
        return f'{{"order_id": {self.order_id}, "amount": {self.amount}}}'.encode()


@dataclass(slots=True)
class Second:
    """The requests that ended in one second of the soak."""

    classes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    healthy_paid: int = 0


@dataclass(slots=True)
class Samples:
    """A count, and the first few cases as sentences."""

    count: int = 0
    first: list[str] = field(default_factory=list)

    def add(self, sentence: str) -> None:
        self.count += 1
        if len(self.first) < SAMPLES_KEPT:
            self.first.append(sentence)


class Ledger:
    def __init__(self, origin: float, answer_bound: float) -> None:
        self.origin = origin
        self.answer_bound = answer_bound
        self.seconds: dict[int, Second] = {}
        self.statuses: Counter[tuple[str, str]] = Counter()
        """(kind, status or failure): requests."""
        self.unexpected = Samples()
        """Answers with a status other than 200, 4xx and 503."""
        self.no_retry_after = Samples()
        """503s without a Retry-After header."""
        self.late = Samples()
        """Answers later than ``answer_bound``, and requests with no answer in time."""
        self.connection_failures: list[float] = []
        """When a request found its connection refused or cut, from the origin."""
        self.paid: dict[int, int] = {}
        """Order: the payment id its 200s named."""
        self.conflicts = Samples()
        """An order whose 200s named two payment ids."""
        self.ambiguous: set[int] = set()
        """Orders an attempt without a key may have paid without our seeing a 200."""
        self.finals: Counter[tuple[str, str]] = Counter()
        """(kind, final answer): payment intents."""
        self.unresolved = Samples()
        """Payment intents that reached no final answer within their bound."""
        self.unexpected_finals = Samples()
        """Payment intents whose final answer is not one their kind allows."""
        self.bad_input_paid = Samples()
        """A wrong amount or a bad body answered 200."""
        self.recent_payments: deque[int] = deque(maxlen=2000)
        self.latest_end = 0.0

    def at(self, moment: float) -> float:
        return moment - self.origin

    def record(self, kind: str, outcome: Outcome, detail: str = "") -> None:
        """One request's end."""
        ended = self.at(outcome.ended)
        self.latest_end = max(self.latest_end, ended)
        second = self.seconds.setdefault(math.floor(ended), Second())
        second.classes[status_class(outcome)] += 1
        if outcome.answer is None:
            label = outcome.failure or "failed"
            if outcome.failure == "timeout":
                self.late.add(f"{kind} at {ended:.1f} s: no answer in {outcome.seconds:.1f} s")
            else:
                self.connection_failures.append(ended)
        else:
            status = outcome.answer.status
            code = outcome.answer.json().get("code")
            label = f"{status} {code}" if isinstance(code, str) else str(status)
            second.latencies.append(outcome.seconds)
            if status != 200 and status != 503 and not 400 <= status < 500:
                body = outcome.answer.body[:200].decode(errors="replace")
                self.unexpected.add(f"{kind} at {ended:.1f} s: {status} {detail} {body}".strip())
            if status == 503 and "retry-after" not in outcome.answer.headers:
                self.no_retry_after.add(f"{kind} at {ended:.1f} s: 503 {code}")
            if outcome.seconds > self.answer_bound:
                self.late.add(f"{kind} at {ended:.1f} s: {label} after {outcome.seconds:.2f} s")
            if status == 200 and kind in (WRONG_AMOUNT, BAD_BODY):
                self.bad_input_paid.add(f"{kind} {detail} at {ended:.1f} s".replace("  ", " "))
            if status == 200 and kind in HEALTHY_KINDS:
                second.healthy_paid += 1
        self.statuses[(f"{kind}: {detail}" if detail else kind, label)] += 1

    def payment_answered(self, intent: Intent, outcome: Outcome) -> bool:
        """Note what one attempt of ``intent`` got; True when it is a final answer."""
        answer = outcome.answer
        if answer is None or answer.status >= 500:
            intent.ambiguous = True
            if intent.key is None:  # a keyed one learns what became of it when retried
                self.ambiguous.add(intent.order_id)
            return False
        document = answer.json()
        if answer.status == 200:
            payment_id = document.get("payment_id")
            if not isinstance(payment_id, int):
                self.conflicts.add(f"order {intent.order_id}: a 200 without a payment id")
                return True
            known = self.paid.setdefault(intent.order_id, payment_id)
            if known != payment_id:
                self.conflicts.add(
                    f"order {intent.order_id}: 200s named payments {known} and {payment_id}"
                )
            self.recent_payments.append(payment_id)
            return True
        return not (answer.status == 409 and document.get("code") == "idempotency_key_in_use")

    def finished(self, intent: Intent, outcome: Outcome) -> None:
        """``intent``'s final answer."""
        answer = outcome.answer
        assert answer is not None
        code = answer.json().get("code")
        final = f"{answer.status} {code}" if isinstance(code, str) else str(answer.status)
        self.finals[(intent.kind, final)] += 1
        if not _allowed(intent, final):
            self.unexpected_finals.add(
                f"{intent.kind} of order {intent.order_id}"
                f"{'' if intent.key is None else ' key ' + intent.key}: {final}"
                f" after {intent.attempts} attempt(s)"
            )

    def gave_up(self, intent: Intent, last: Outcome | None, why: str) -> None:
        self.finals[(intent.kind, "none")] += 1
        said = "nothing" if last is None else (str(last.status) if last.answer else last.failure)
        self.unresolved.add(
            f"{intent.kind} of order {intent.order_id}"
            f"{'' if intent.key is None else ' key ' + intent.key}: {why} after"
            f" {intent.attempts} attempt(s), the last got {said}"
        )


def _allowed(intent: Intent, final: str) -> bool:
    """A keyed payment of an order of its own, and each of concurrent duplicates, ends paid;
    a payment without a key may find its order paid by an earlier attempt of its own whose
    answer was lost; each payment of a hot order is paid, or finds it paid by another."""
    if final == "200":
        return True
    if intent.kind == HOT or (intent.kind == UNKEYED and intent.ambiguous):
        return final == "409 order_not_payable"
    return False
