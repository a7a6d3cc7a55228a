"""What one soak gives: everything the checks and the report read."""

from __future__ import annotations

from dataclasses import dataclass

from chaos.database import OrderRanges, Store
from chaos.faults import Planned, Span
from chaos.ledger import Ledger
from chaos.probes import Probe, Sample
from chaos.slow_clients import SlowClient
from payment.adapters.settings import Settings as ServiceSettings


@dataclass(frozen=True, slots=True)
class Limits:
    """The service's own bounds, as its defaults set them (the soak runs it with its
    defaults), and what the checks allow beyond them."""

    deadline_seconds: float
    header_seconds: float
    body_seconds: float
    idle_seconds: float
    answer_slack_seconds: float = 1.0
    """Beyond the request deadline, for an answer to travel and be read under load."""
    cut_slack_seconds: float = 3.0
    """Beyond a connection's time limit, for the service to notice and close it."""
    livez_seconds: float = 1.0
    max_worker_rss_mib: float = 512.0
    hot_share: float = 0.5
    """Of the fault-free rate of healthy payments, while one order is locked."""

    @classmethod
    def of_service(cls, *, max_worker_rss_mib: float) -> Limits:
        fields = ServiceSettings.model_fields

        def default(name: str) -> float:
            value = fields[name].default
            assert isinstance(value, int | float), name
            return float(value)

        return cls(
            deadline_seconds=default("payment_request_deadline_ms") / 1000,
            header_seconds=default("payment_header_timeout_seconds"),
            body_seconds=default("payment_body_timeout_seconds"),
            idle_seconds=default("payment_idle_timeout_seconds"),
            max_worker_rss_mib=max_worker_rss_mib,
        )

    @property
    def answer_bound(self) -> float:
        return self.deadline_seconds + self.answer_slack_seconds

    @property
    def slow_hold_seconds(self) -> float:
        """How long a slow client holds on: past every limit that should close it."""
        return max(self.header_seconds, self.body_seconds, self.idle_seconds) + (
            self.cut_slack_seconds + 1
        )

    def as_json(self) -> dict[str, float]:
        return {
            "request_deadline_seconds": self.deadline_seconds,
            "answer_bound_seconds": self.answer_bound,
            "header_timeout_seconds": self.header_seconds,
            "body_timeout_seconds": self.body_seconds,
            "idle_timeout_seconds": self.idle_seconds,
            "cut_slack_seconds": self.cut_slack_seconds,
            "livez_seconds": self.livez_seconds,
            "max_worker_rss_mib": self.max_worker_rss_mib,
            "hot_share": self.hot_share,
        }


@dataclass(frozen=True, slots=True)
class Complaints:
    """Lines of the service's log at warning level or above, and tracebacks."""

    counts: dict[str, int]
    first: list[str]


@dataclass(frozen=True, slots=True)
class Findings:
    seconds: int
    """Of traffic; the drain and the checks come after."""
    limits: Limits
    orders: OrderRanges
    orders_exhausted: bool
    plan: list[Planned]
    spans: list[Span]
    fault_errors: list[str]
    ledger: Ledger
    livez: list[Probe]
    readyz: list[Probe]
    memory: list[Sample]
    slow: list[SlowClient]
    store: Store
    verified: bool
    verify_output: str
    recovery: str | None
    """None when the service answered /readyz 200 and paid a fresh order after the soak;
    else what went wrong."""
    log_complaints: Complaints
    postgres_version: str
