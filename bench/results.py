"""What one load run gives, and the record kept of it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

REFERENCE = "reference"
CEILING = "ceiling"
CEILING_KEYED = "ceiling keyed"
SERVICE = "service"
KEYED = "service keyed"
REPLAY = "service replay"
SMALL_TABLE = "service 10^3"
LARGE_TABLE = "service 10^6"
OUTBOX_OFF = "outbox off"
"""The service with its outbox write switched off (``bench/without_outbox.py``)."""
OUTBOX_ON = "outbox on"
"""The service as shipped, in the outbox comparison."""
REFUNDS = "refunds"
"""The service refunding payments in full: POST /payments/{id}/refunds, one payment each."""


@dataclass(frozen=True, slots=True)
class Load:
    """What a load generator saw: wrk over HTTP, or pgbench at the database."""

    requests: int
    """Requests answered (transactions committed, for pgbench)."""
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    statuses: dict[str, int]
    """Answers by HTTP status; pgbench's by 'committed' and 'failed'."""
    errors: int
    """Answers that are not 2xx, socket errors and timeouts (failed or aborted, for pgbench)."""
    ok: int
    """200s seen (201s, for refunds; transactions committed, for pgbench)."""
    in_flight: int = 0
    """Requests sent but not answered when the load stopped."""
    past_block: int = 0
    """Requests for orders beyond the run's block: the block was too small."""
    replayed: int = 0
    """Answers marked ``Idempotent-Replayed: true``."""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class Run:
    """One measured run: its load and what it left in the database."""

    variant: str
    workers: int | None
    """Service processes; None for pgbench (the reference and the ceiling)."""
    connections: int
    table_orders: int
    """Rows in ``orders`` when the run started."""
    load: Load
    payments: int
    """Payments written for the orders of the run's block (new ones, for a replay run;
    refunds written for the run's payments, for the refund run)."""
    payments_match: bool
    """Paying runs: every 200 is a payment, and a payment without a 200 seen can only be a
    request still in flight when the load stopped (the service finishes it; nobody reads
    the answer). Replay runs: no new payment, and every 200 is marked as a replay. The
    refund run: the same with refunds and 201s, each refund with its audit record and its
    event, and no payment refunded beyond its amount."""
    ratio_to_ceiling: float | None = None
    ratio_to_reference: float | None = None
    server_cpu_seconds: float | None = None
    """CPU (user + system) the service's worker processes used during the load; None for
    pgbench."""
    database_cpu_seconds: float | None = None
    """CPU PostgreSQL's processes used during the load; None when they cannot be seen."""
    notes: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.load.rate

    @property
    def server_ms_per_payment(self) -> float | None:
        return _per_payment_ms(self.server_cpu_seconds, self.payments)

    @property
    def database_ms_per_payment(self) -> float | None:
        return _per_payment_ms(self.database_cpu_seconds, self.payments)

    def as_json(self) -> dict[str, object]:
        load = self.load
        return {
            "variant": self.variant,
            "workers": self.workers,
            "connections": self.connections,
            "table_orders": self.table_orders,
            "seconds": round(load.seconds, 2),
            "requests": load.requests,
            "rps": round(self.rps, 1),
            "p50_ms": round(load.p50_ms, 2),
            "p90_ms": round(load.p90_ms, 2),
            "p99_ms": round(load.p99_ms, 2),
            "errors": load.errors,
            "statuses": load.statuses,
            "ok": load.ok,
            "payments": self.payments,
            "in_flight_at_end": load.in_flight,
            "payments_match": self.payments_match,
            "replayed": load.replayed,
            "ratio_to_ceiling": _rounded(self.ratio_to_ceiling, 3),
            "ratio_to_reference": _rounded(self.ratio_to_reference, 3),
            "server_cpu_seconds": _rounded(self.server_cpu_seconds, 2),
            "database_cpu_seconds": _rounded(self.database_cpu_seconds, 2),
            "server_cpu_ms_per_payment": _rounded(self.server_ms_per_payment, 4),
            "database_cpu_ms_per_payment": _rounded(self.database_ms_per_payment, 4),
            "notes": self.notes,
        }


def _per_payment_ms(cpu_seconds: float | None, payments: int) -> float | None:
    """Milliseconds of CPU per payment made; None when unknown or when none was made."""
    if cpu_seconds is None or payments <= 0:
        return None
    return cpu_seconds * 1000 / payments


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def percentile(sorted_values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of values sorted in increasing order; 0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class Verification:
    """What ``payment-service verify`` said of the benchmark's database at one point."""

    when: str
    passed: bool
    output: str

    def as_json(self) -> dict[str, object]:
        return {"when": self.when, "passed": self.passed, "output": self.output}


@dataclass(frozen=True, slots=True)
class Part:
    """The CPU one part of a payment costs, measured on its own (``bench/parts.py``)."""

    key: str
    label: str
    samples_us: list[float]
    """CPU microseconds per operation in each repetition; empty when it was not measured."""
    operations: int
    """Operations per repetition (wrk runs: the fewest requests of a repetition)."""
    detail: str
    within: str | None = None
    """The key of the part this one is a piece of."""

    @property
    def microseconds(self) -> float | None:
        """The median of the repetitions; None when it was not measured."""
        return statistics.median(self.samples_us) if self.samples_us else None

    def as_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "label": self.label,
            "cpu_us_per_operation": _rounded(self.microseconds, 2),
            "repetitions_us": [round(sample, 2) for sample in self.samples_us],
            "operations_per_repetition": self.operations,
            "within": self.within,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Side:
    """One side of the outbox comparison, over its runs: throughput is their requests over
    their seconds, CPU per payment their CPU over their payments, the percentiles the mean
    of theirs (wrk gives percentiles, not latencies)."""

    runs: list[Run]

    @property
    def rps(self) -> float:
        seconds = sum(run.load.seconds for run in self.runs)
        return sum(run.load.requests for run in self.runs) / seconds if seconds > 0 else 0.0

    @property
    def p50_ms(self) -> float:
        return statistics.fmean(run.load.p50_ms for run in self.runs) if self.runs else 0.0

    @property
    def p99_ms(self) -> float:
        return statistics.fmean(run.load.p99_ms for run in self.runs) if self.runs else 0.0

    @property
    def server_ms_per_payment(self) -> float | None:
        spent = [run.server_cpu_seconds for run in self.runs]
        return _per_payment_ms(_total(spent), sum(run.payments for run in self.runs))

    @property
    def database_ms_per_payment(self) -> float | None:
        spent = [run.database_cpu_seconds for run in self.runs]
        return _per_payment_ms(_total(spent), sum(run.payments for run in self.runs))

    def as_json(self) -> dict[str, object]:
        return {
            "runs": len(self.runs),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "server_cpu_ms_per_payment": _rounded(self.server_ms_per_payment, 4),
            "database_cpu_ms_per_payment": _rounded(self.database_ms_per_payment, 4),
        }


def _total(values: Sequence[float | None]) -> float | None:
    return None if not values or None in values else sum(v for v in values if v is not None)


def ratio(on: float | None, off: float | None) -> float | None:
    """``on`` / ``off``; None when either is unknown or ``off`` is 0."""
    return None if on is None or not off else on / off


@dataclass(frozen=True, slots=True)
class OutboxCost:
    """The service as shipped (``on``) beside the same service with its outbox write
    switched off (``off``): one worker, the target connections, their runs interleaved."""

    off: Side
    on: Side
    workers: int
    connections: int
    events_added_after_off: int
    """Events the harness wrote, after the 'off' runs and outside the measure, for the
    payments the 'off' service made without one (its warm-up's included)."""

    @property
    def throughput_ratio(self) -> float | None:
        return ratio(self.on.rps, self.off.rps)

    @property
    def server_cpu_ratio(self) -> float | None:
        return ratio(self.on.server_ms_per_payment, self.off.server_ms_per_payment)

    def as_json(self) -> dict[str, object]:
        return {
            "workers": self.workers,
            "connections": self.connections,
            "order": " ".join(run.variant.split()[-1] for run in self.interleaved()),
            "off": self.off.as_json(),
            "on": self.on.as_json(),
            "ratio_on_off": {
                "rps": _rounded(self.throughput_ratio, 3),
                "p50_ms": _rounded(ratio(self.on.p50_ms, self.off.p50_ms), 3),
                "p99_ms": _rounded(ratio(self.on.p99_ms, self.off.p99_ms), 3),
                "server_cpu_ms_per_payment": _rounded(self.server_cpu_ratio, 3),
                "database_cpu_ms_per_payment": _rounded(
                    ratio(self.on.database_ms_per_payment, self.off.database_ms_per_payment), 3
                ),
            },
            "events_added_after_off": self.events_added_after_off,
        }

    def interleaved(self) -> list[Run]:
        """The runs in the order they ran: off, on, off, on..."""
        return [run for pair in zip(self.off.runs, self.on.runs, strict=True) for run in pair]


@dataclass(frozen=True, slots=True)
class Findings:
    """Everything one benchmark measured."""

    runs: list[Run]
    memory: list[dict[str, object]]
    best_workers: int
    small: Run
    large: Run
    postgres: str
    database: str
    database_cpu: str
    """How PostgreSQL's CPU was measured, or why it could not be."""
    service_log_complaints: list[str]
    verifications: list[Verification]
    outbox: OutboxCost | None = None
    """The outbox's cost: the service with it beside the service without it."""
    parts: list[Part] = field(default_factory=list)
    """Where a payment's server CPU goes (bench/parts.py); empty when not measured."""
