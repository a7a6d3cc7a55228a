"""The figures: a table on standard output, the targets, JSON and a PNG chart."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.results import CEILING, KEYED, REPLAY, SERVICE, Findings, Run

P99_TARGET_MS = 25.0
THROUGHPUT_SHARE = 0.5
SIZE_RATIO = 0.9


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    value: float
    limit: float
    met: bool
    detail: str

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": round(self.value, 3),
            "limit": self.limit,
            "met": self.met,
            "detail": self.detail,
        }


def run_line(run: Run) -> str:
    workers = "-" if run.workers is None else str(run.workers)
    ratio = "-" if run.ratio_to_ceiling is None else f"{run.ratio_to_ceiling:.2f}"
    match = "yes" if run.payments_match else "NO"
    return (
        f"{run.variant:<16} {workers:>7} {run.connections:>5} {run.rps:>8.0f}"
        f" {run.load.p50_ms:>7.2f} {run.load.p90_ms:>7.2f} {run.load.p99_ms:>7.2f}"
        f" {run.load.errors:>6} {run.load.ok:>7} {run.payments:>8} {match:>5} {ratio:>7}"
    )


TABLE_HEADER = (
    f"{'variant':<16} {'workers':>7} {'conns':>5} {'rps':>8} {'p50 ms':>7} {'p90 ms':>7}"
    f" {'p99 ms':>7} {'errors':>6} {'200s':>7} {'payments':>8} {'match':>5} {'ceiling':>7}"
)


def print_table(runs: Sequence[Run]) -> None:
    say(TABLE_HEADER)
    say("-" * len(TABLE_HEADER))
    for run in runs:
        say(run_line(run))
        for note in run.notes:
            say(f"    note: {note}")
    say(
        "('200s': 200 answers seen, committed transactions for the ceiling; 'payments': rows"
        " written for the run's orders; 'match': every 200 is a payment and every other"
        " payment is a request still in flight when the load stopped; 'ceiling': rps /"
        " ceiling rps at the same connections)"
    )


def find(runs: Sequence[Run], variant: str, workers: int | None, connections: int) -> Run:
    for run in runs:
        if (run.variant, run.workers, run.connections) == (variant, workers, connections):
            return run
    raise LookupError(f"no run {variant} workers={workers} connections={connections}")


def targets(
    runs: Sequence[Run], *, best_workers: int, small: Run, large: Run, connections: int
) -> list[Target]:
    """The issue's targets, from this run's figures; throughput and p99 for the worker
    count that did best at ``connections``."""
    ceiling = find(runs, CEILING, None, connections)
    service = find(runs, SERVICE, best_workers, connections)
    service_runs = [run for run in runs if run.workers is not None]
    with_errors = [run for run in service_runs if run.load.errors]
    errors = sum(run.load.errors for run in service_runs)
    share = service.rps / ceiling.rps if ceiling.rps else 0.0
    size_ratio = large.rps / small.rps if small.rps else 0.0
    return [
        Target(
            f"throughput at {connections} connections >= {THROUGHPUT_SHARE} x ceiling",
            share,
            THROUGHPUT_SHARE,
            share >= THROUGHPUT_SHARE,
            f"service ({best_workers} worker(s)) {service.rps:.0f} rps,"
            f" ceiling {ceiling.rps:.0f} rps",
        ),
        Target(
            f"p99 at {connections} connections <= {P99_TARGET_MS:g} ms",
            service.load.p99_ms,
            P99_TARGET_MS,
            service.load.p99_ms <= P99_TARGET_MS,
            f"service ({best_workers} worker(s))",
        ),
        Target(
            "zero errors at every concurrency",
            errors,
            0,
            errors == 0,
            f"over all {len(service_runs)} service runs"
            if not with_errors
            else "errors in: "
            + ", ".join(
                f"{run.variant} ({run.workers} w, {run.connections} c)" for run in with_errors
            ),
        ),
        Target(
            f"throughput with 10^6 orders >= {SIZE_RATIO} x with 10^3",
            size_ratio,
            SIZE_RATIO,
            size_ratio >= SIZE_RATIO,
            f"{large.rps:.0f} rps with {large.table_orders} orders in the table,"
            f" {small.rps:.0f} rps with {small.table_orders}",
        ),
    ]


def print_targets(found: Sequence[Target]) -> None:
    for target in found:
        verdict = "met   " if target.met else "MISSED"
        say(f"  {verdict} {target.name}: {target.value:.3g} (limit {target.limit:g})")
        say(f"         {target.detail}")


def write_json(path: Path, document: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")


def write_chart(
    path: Path,
    runs: Sequence[Run],
    *,
    connections: Sequence[int],
    workers: Sequence[int],
    title: str,
) -> bool:
    """Throughput and p99 against connections: the ceiling beside the service with each
    worker count. False when matplotlib is missing (``pip install -e '.[bench]'``)."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker  # type: ignore[import-not-found,unused-ignore]

    lines = [("ceiling (pgbench)", [find(runs, CEILING, None, c) for c in connections])]
    for count in workers:
        label = f"service, {count} worker{'s' if count > 1 else ''}"
        lines.append((label, [find(runs, SERVICE, count, c) for c in connections]))
    figure, (rps_axes, p99_axes) = pyplot.subplots(1, 2, figsize=(10, 4.2))
    for label, line in lines:
        rps_axes.plot(connections, [run.rps for run in line], marker="o", label=label)
        p99_axes.plot(connections, [run.load.p99_ms for run in line], marker="o", label=label)
    p99_axes.axhline(P99_TARGET_MS, color="grey", linestyle="--", linewidth=1)
    p99_axes.annotate(
        f"target {P99_TARGET_MS:g} ms",
        (connections[0], P99_TARGET_MS),
        textcoords="offset points",
        xytext=(2, 3),
        fontsize="small",
        color="grey",
    )
    rps_axes.set_ylim(bottom=0)
    p99_axes.set_yscale("log")
    p99_axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    for axes, name, unit in (
        (rps_axes, "Throughput", "requests per second"),
        (p99_axes, "p99 latency (log scale)", "milliseconds"),
    ):
        axes.set_xscale("log")
        axes.set_xticks(list(connections), [str(c) for c in connections])
        axes.minorticks_off()
        axes.set_xlabel("connections")
        axes.set_ylabel(unit)
        axes.set_title(name)
        axes.grid(alpha=0.3)
    rps_axes.legend(fontsize="small")
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    pyplot.close(figure)
    return True


def print_summary(
    findings: Findings, found: Sequence[Target], *, connections: int, highest: int
) -> None:
    best, small, large = findings.best_workers, findings.small, findings.large
    say("\n== Results ==")
    print_table(findings.runs)
    say(f"\nbest worker count at {connections} connections: {best}")
    say(
        f"table size ({best} worker(s), {connections} connections):"
        f" {small.rps:.0f} rps with {small.table_orders} orders in the table,"
        f" {large.rps:.0f} rps with {large.table_orders}; ratio {large.rps / small.rps:.2f}"
    )
    keyed = find(findings.runs, KEYED, best, connections)
    replayed = find(findings.runs, REPLAY, best, connections)
    plain = find(findings.runs, SERVICE, best, connections)
    say(
        f"idempotency keys: {keyed.rps:.0f} rps, p99 {keyed.load.p99_ms:.1f} ms"
        f" ({keyed.rps / plain.rps:.2f} x without a key);"
        f" replays: {replayed.rps:.0f} rps, p99 {replayed.load.p99_ms:.1f} ms,"
        f" {replayed.load.replayed} replayed, {replayed.payments} new payments"
    )
    for memory in findings.memory:
        say(
            f"resident memory after {highest} connections, {memory['workers']}"
            f" worker(s): master {memory['master_rss_mib']} MiB,"
            f" workers {memory['worker_rss_mib']} MiB"
        )
    say("\ntargets:")
    print_targets(found)


def document(
    findings: Findings,
    found: Sequence[Target],
    *,
    wall: float,
    machine: dict[str, object],
    settings: dict[str, object],
    table_size: dict[str, object],
) -> dict[str, object]:
    """The JSON record of one benchmark: no paths of the machine it ran on."""
    small, large = findings.small, findings.large
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(wall),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": _cpu_model(),
            "python": platform.python_version(),
            "postgres": findings.postgres,
            "database": findings.database,
            **machine,
        },
        "settings": settings,
        "definitions": DEFINITIONS,
        "best_workers": findings.best_workers,
        "runs": [run.as_json() for run in findings.runs],
        "table_size": {
            **table_size,
            "workers": findings.best_workers,
            "small_table_orders": small.table_orders,
            "small_rps": round(small.rps, 1),
            "large_table_orders": large.table_orders,
            "large_rps": round(large.rps, 1),
            "ratio": round(large.rps / small.rps, 3) if small.rps else None,
        },
        "memory": findings.memory,
        "service_log_warnings_or_errors": findings.service_log_complaints,
        "targets": [target.as_json() for target in found],
        "payments_match_every_run": all(run.payments_match for run in findings.runs),
    }


DEFINITIONS = {
    "ceiling": "pgbench running the service's transaction (order lock, conditional update,"
    " payment insert, audit insert, commit; keyed: the key's claim and answer too), plus one"
    " nextval() per transaction to pick the order. The service also runs its pool's"
    " pre-ping (SELECT 1) per request, which the ceiling does not",
    "errors": "answers that are not 2xx, socket errors and timeouts (pgbench: failed"
    " transactions and aborted clients); for replays also 200s not marked replayed",
    "payments_match": "every 200 seen has its payment, and every other payment of the run's"
    " orders is a request in flight when the load stopped; replays: no new payment",
    "table_orders": "rows in orders when the run started. Runs leave their orders behind;"
    " the size comparison empties the tables first. 10^3: the other pending orders"
    " (table_size.other_pending_orders), which nobody pays, plus the run's block of"
    " consecutive ids. 10^6: those, the 10^3 run's block (paid now) and"
    " table_size.large_paid_orders paid orders, each with its payment and audit record,"
    " with the run's pending orders spread evenly among them over the whole id range",
    "ratio_to_ceiling": "service rps / ceiling rps at the same connections (keyed: against"
    " the keyed ceiling)",
    "latency": "wrk's percentiles of each request's time; pgbench's per-transaction log",
}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
