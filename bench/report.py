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

from bench.results import (
    CEILING,
    KEYED,
    REFERENCE,
    REFUNDS,
    REPLAY,
    SERVICE,
    Findings,
    OutboxCost,
    Part,
    Run,
    Side,
    ratio,
)

THROUGHPUT_SHARE = 0.4
"""Of the fixed reference's throughput, at the target concurrency."""
KEYED_THROUGHPUT_SHARE = 0.3
P99_TARGET_MS = 25.0
SERVER_CPU_MS = 0.4
"""CPU of the service's processes per payment, at the target concurrency."""
HIGHEST_P99_MS = 100.0
LOWEST_P50_RATIO = 2.0
"""Of the ceiling's p50, at one connection."""
SIZE_RATIO = 0.9
OUTBOX_THROUGHPUT_RATIO = 0.9
"""The service's throughput with its outbox, of its throughput without."""
OUTBOX_CPU_RATIO = 1.1
"""The service's CPU per payment with its outbox, of its CPU per payment without."""


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    value: float | None
    """None when it could not be measured: the target is then missed."""
    limit: float
    met: bool
    detail: str

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": None if self.value is None else round(self.value, 3),
            "limit": self.limit,
            "met": self.met,
            "detail": self.detail,
        }


def run_line(run: Run) -> str:
    workers = "-" if run.workers is None else str(run.workers)
    match = "yes" if run.payments_match else "NO"
    return (
        f"{run.variant:<16} {workers:>7} {run.connections:>5} {run.rps:>8.0f}"
        f" {run.load.p50_ms:>7.2f} {run.load.p90_ms:>7.2f} {run.load.p99_ms:>7.2f}"
        f" {run.load.errors:>6} {run.load.ok:>7} {run.payments:>8} {match:>5}"
        f" {_figure(run.ratio_to_reference, 2):>5} {_figure(run.ratio_to_ceiling, 2):>7}"
        f" {_figure(run.server_ms_per_payment, 3):>7} {_figure(run.database_ms_per_payment, 3):>7}"
    )


def _figure(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


TABLE_HEADER = (
    f"{'variant':<16} {'workers':>7} {'conns':>5} {'rps':>8} {'p50 ms':>7} {'p90 ms':>7}"
    f" {'p99 ms':>7} {'errors':>6} {'ok':>7} {'payments':>8} {'match':>5} {'ref':>5}"
    f" {'ceiling':>7} {'srv cpu':>7} {'db cpu':>7}"
)


def print_table(runs: Sequence[Run]) -> None:
    say(TABLE_HEADER)
    say("-" * len(TABLE_HEADER))
    for run in runs:
        say(run_line(run))
        for note in run.notes:
            say(f"    note: {note}")
    say(
        "('ok': 200 answers seen (201s for 'refunds'), committed transactions for pgbench;"
        " 'payments': rows written for the run's orders ('refunds': refunds written for its"
        " payments); 'match': every 200 is a payment and every other payment is a request"
        " still in flight when the load stopped ('refunds': the same with 201s and refunds,"
        " each refund with its audit record and event, none beyond its payment's amount);"
        " 'ref': rps / the fixed reference's rps at the same connections; 'ceiling': rps /"
        " ceiling rps at the same connections; 'srv cpu', 'db cpu': CPU milliseconds per"
        " payment ('refunds': per refund) of the service's worker processes and of"
        " PostgreSQL's)"
    )


def find(runs: Sequence[Run], variant: str, workers: int | None, connections: int) -> Run:
    for run in runs:
        if (run.variant, run.workers, run.connections) == (variant, workers, connections):
            return run
    raise LookupError(f"no run {variant} workers={workers} connections={connections}")


def targets(
    runs: Sequence[Run],
    *,
    best_workers: int,
    small: Run,
    large: Run,
    outbox: OutboxCost | None,
    connections: int,
    lowest: int,
    highest: int,
) -> list[Target]:
    """The targets, from this run's figures; each service figure is of the worker count
    that did best at ``connections``, but the outbox comparison's."""
    reference = find(runs, REFERENCE, None, connections)
    service = find(runs, SERVICE, best_workers, connections)
    keyed = find(runs, KEYED, best_workers, connections)
    outbox_targets = [] if outbox is None else _outbox_targets(outbox)
    return [
        _share_target(service, reference, THROUGHPUT_SHARE, "throughput"),
        _share_target(keyed, reference, KEYED_THROUGHPUT_SHARE, "keyed throughput"),
        Target(
            f"p99 at {connections} connections <= {P99_TARGET_MS:g} ms",
            service.load.p99_ms,
            P99_TARGET_MS,
            service.load.p99_ms <= P99_TARGET_MS,
            f"service ({best_workers} worker(s))",
        ),
        _errors_target(runs),
        _cpu_target(service),
        _highest_target(find(runs, SERVICE, best_workers, highest)),
        _lowest_target(
            find(runs, SERVICE, best_workers, lowest), find(runs, CEILING, None, lowest)
        ),
        _size_target(small, large),
        *outbox_targets,
    ]


def _share_target(run: Run, reference: Run, share: float, what: str) -> Target:
    ratio = run.rps / reference.rps if reference.rps else 0.0
    return Target(
        f"{what} at {run.connections} connections >= {share:g} x reference",
        ratio,
        share,
        ratio >= share,
        f"{run.variant} ({run.workers} worker(s)) {run.rps:.0f} rps,"
        f" reference {reference.rps:.0f} rps",
    )


def _errors_target(runs: Sequence[Run]) -> Target:
    service_runs = [run for run in runs if run.workers is not None]
    with_errors = [run for run in service_runs if run.load.errors]
    errors = sum(run.load.errors for run in service_runs)
    return Target(
        "zero errors at every concurrency",
        errors,
        0,
        errors == 0,
        f"over all {len(service_runs)} service runs"
        if not with_errors
        else "errors in: "
        + ", ".join(f"{run.variant} ({run.workers} w, {run.connections} c)" for run in with_errors),
    )


def _cpu_target(service: Run) -> Target:
    spent = service.server_ms_per_payment
    return Target(
        f"server CPU per payment at {service.connections} connections <= {SERVER_CPU_MS:g} ms",
        spent,
        SERVER_CPU_MS,
        spent is not None and spent <= SERVER_CPU_MS,
        f"service ({service.workers} worker(s)): {_figure(service.server_cpu_seconds, 2)} s"
        f" for {service.payments} payments; PostgreSQL"
        f" {_figure(service.database_ms_per_payment, 3)} ms per payment",
    )


def _highest_target(service: Run) -> Target:
    p99, errors = service.load.p99_ms, service.load.errors
    return Target(
        f"p99 at {service.connections} connections <= {HIGHEST_P99_MS:g} ms, zero errors",
        p99,
        HIGHEST_P99_MS,
        p99 <= HIGHEST_P99_MS and errors == 0,
        f"service ({service.workers} worker(s)): {errors} errors",
    )


def _lowest_target(service: Run, ceiling: Run) -> Target:
    ratio = service.load.p50_ms / ceiling.load.p50_ms if ceiling.load.p50_ms else None
    return Target(
        f"p50 at {service.connections} connection(s) <= {LOWEST_P50_RATIO:g} x the ceiling's",
        ratio,
        LOWEST_P50_RATIO,
        ratio is not None and ratio <= LOWEST_P50_RATIO,
        f"service ({service.workers} worker(s)) {service.load.p50_ms:.2f} ms,"
        f" ceiling {ceiling.load.p50_ms:.2f} ms",
    )


def _size_target(small: Run, large: Run) -> Target:
    ratio = large.rps / small.rps if small.rps else 0.0
    return Target(
        f"throughput with 10^6 orders >= {SIZE_RATIO} x with 10^3",
        ratio,
        SIZE_RATIO,
        ratio >= SIZE_RATIO,
        f"{large.rps:.0f} rps with {large.table_orders} orders in the table,"
        f" {small.rps:.0f} rps with {small.table_orders}",
    )


def _outbox_targets(outbox: OutboxCost) -> list[Target]:
    off, on = outbox.off, outbox.on
    where = f"{outbox.workers} worker, {outbox.connections} connections"
    rps, cpu = outbox.throughput_ratio, outbox.server_cpu_ratio
    return [
        Target(
            f"throughput with the outbox >= {OUTBOX_THROUGHPUT_RATIO:g} x without",
            rps,
            OUTBOX_THROUGHPUT_RATIO,
            rps is not None and rps >= OUTBOX_THROUGHPUT_RATIO,
            f"{where}: {on.rps:.0f} rps with, {off.rps:.0f} rps without",
        ),
        Target(
            f"server CPU per payment with the outbox <= {OUTBOX_CPU_RATIO:g} x without",
            cpu,
            OUTBOX_CPU_RATIO,
            cpu is not None and cpu <= OUTBOX_CPU_RATIO,
            f"{where}: {_figure(on.server_ms_per_payment, 3)} ms with,"
            f" {_figure(off.server_ms_per_payment, 3)} ms without",
        ),
    ]


def print_targets(found: Sequence[Target]) -> None:
    """A table: each target, its value, its limit and met or missed; what it was made of
    below each line."""
    width = max(len(target.name) for target in found)
    say(f"  {'target':<{width}} {'value':>8} {'limit':>7}  verdict")
    say("  " + "-" * (width + 27))
    for target in found:
        value = "n/a" if target.value is None else f"{target.value:.3g}"
        verdict = "met" if target.met else "MISSED"
        say(f"  {target.name:<{width}} {value:>8} {target.limit:>7g}  {verdict}")
        say(f"      {target.detail}")
    met = sum(target.met for target in found)
    say(f"  {met} of {len(found)} targets met")


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
    """Throughput and p99 against connections: the fixed reference and the ceiling beside
    the service with each worker count. False when matplotlib is missing
    (``pip install -e '.[bench]'``)."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker  # type: ignore[import-not-found,unused-ignore]

    lines = [
        ("reference (pgbench)", "--", [find(runs, REFERENCE, None, c) for c in connections]),
        ("ceiling (pgbench)", ":", [find(runs, CEILING, None, c) for c in connections]),
    ]
    for count in workers:
        label = f"service, {count} worker{'s' if count > 1 else ''}"
        lines.append((label, "-", [find(runs, SERVICE, count, c) for c in connections]))
    figure, (rps_axes, p99_axes) = pyplot.subplots(1, 2, figsize=(10, 4.2))
    for label, style, line in lines:
        rps = [run.rps for run in line]
        p99 = [run.load.p99_ms for run in line]
        rps_axes.plot(connections, rps, marker="o", linestyle=style, label=label)
        p99_axes.plot(connections, p99, marker="o", linestyle=style, label=label)
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
    say(refund_line(find(findings.runs, REFUNDS, best, connections), plain))
    for memory in findings.memory:
        say(
            f"resident memory after {highest} connections, {memory['workers']}"
            f" worker(s): master {memory['master_rss_mib']} MiB,"
            f" workers {memory['worker_rss_mib']} MiB"
        )
    if findings.outbox is not None:
        print_outbox(findings.outbox)
    say(f"PostgreSQL's CPU: {findings.database_cpu}")
    for verification in findings.verifications:
        verdict = "passed" if verification.passed else "FAILED"
        say(f"payment-service verify ({verification.when}): {verdict}")
    say("\ntargets:")
    print_targets(found)
    if findings.parts:
        print_parts(findings.parts, find(findings.runs, SERVICE, best, connections))


def refund_line(refunds: Run, pay: Run) -> str:
    """Refunds beside /pay, at the same connections and worker count."""
    return (
        f"refunds ({refunds.workers} worker(s), {refunds.connections} connections):"
        f" {refunds.rps:.0f} rps, p50 {refunds.load.p50_ms:.2f} ms,"
        f" p99 {refunds.load.p99_ms:.1f} ms, {refunds.load.errors} errors,"
        f" srv cpu {_figure(refunds.server_ms_per_payment, 3)} ms and db cpu"
        f" {_figure(refunds.database_ms_per_payment, 3)} ms per refund;"
        f" {_figure(ratio(refunds.rps, pay.rps), 2)} x /pay's {pay.rps:.0f} rps"
        f" (srv cpu {_figure(pay.server_ms_per_payment, 3)} ms per payment)"
    )


def refunds_json(refunds: Run, pay: Run) -> dict[str, object]:
    """The refund run beside /pay's at the same connections and worker count."""
    return {
        "workers": refunds.workers,
        "connections": refunds.connections,
        "rps": round(refunds.rps, 1),
        "pay_rps": round(pay.rps, 1),
        "ratio_to_pay": _rounded(ratio(refunds.rps, pay.rps), 3),
        "server_cpu_ms_per_refund": _rounded(refunds.server_ms_per_payment, 4),
        "pay_server_cpu_ms_per_payment": _rounded(pay.server_ms_per_payment, 4),
        "database_cpu_ms_per_refund": _rounded(refunds.database_ms_per_payment, 4),
        "pay_database_cpu_ms_per_payment": _rounded(pay.database_ms_per_payment, 4),
    }


def print_outbox(outbox: OutboxCost) -> None:
    """The outbox's cost: each side over its runs, and the one over the other."""
    order = ", ".join(run.variant.split()[-1] for run in outbox.interleaved())
    say(
        f"\nthe outbox's cost ({outbox.workers} worker, {outbox.connections} connections; runs"
        f" in turns: {order}; 'off': bench/without_outbox.py):"
    )
    say(f"  {'':<12} {'rps':>8} {'p50 ms':>7} {'p99 ms':>7} {'srv cpu':>7} {'db cpu':>7}")
    sides: tuple[tuple[str, Side], ...] = (("outbox off", outbox.off), ("outbox on", outbox.on))
    for name, side in sides:
        say(
            f"  {name:<12} {side.rps:>8.0f} {side.p50_ms:>7.2f} {side.p99_ms:>7.2f}"
            f" {_figure(side.server_ms_per_payment, 3):>7}"
            f" {_figure(side.database_ms_per_payment, 3):>7}"
        )
    off, on = outbox.off, outbox.on
    say(
        f"  {'on / off':<12} {_figure(outbox.throughput_ratio, 3):>8}"
        f" {_figure(ratio(on.p50_ms, off.p50_ms), 3):>7}"
        f" {_figure(ratio(on.p99_ms, off.p99_ms), 3):>7}"
        f" {_figure(outbox.server_cpu_ratio, 3):>7}"
        f" {_figure(ratio(on.database_ms_per_payment, off.database_ms_per_payment), 3):>7}"
    )
    say(
        "  (rps: the side's requests over its seconds; p50, p99: the mean of its runs';"
        " cpu: milliseconds per payment over its runs. After each 'off' run, outside the"
        f" measure, the harness wrote the events it did not: {outbox.events_added_after_off}"
        " in all)"
    )


ESTIMATE = (("http_floor", 1), ("app_in_memory", 1), ("pay_in_memory", -1), ("pay_postgres", 1))
"""One payment's server CPU from its parts: the server floor, the app on the in-memory store
less the use case on it, and the use case on PostgreSQL."""


def parts_estimate(parts: Sequence[Part]) -> float | None:
    """One payment's server CPU in microseconds, from its parts (``ESTIMATE``); None when
    one of them was not measured."""
    cost = {part.key: part.microseconds for part in parts}
    terms = [(cost.get(key), sign) for key, sign in ESTIMATE]
    if any(value is None for value, _ in terms):
        return None
    return sum(sign * value for value, sign in terms if value is not None)


def rest_of(parent: Part, parts: Sequence[Part]) -> float | None:
    """What ``parent`` costs beyond the pieces measured within it; None without pieces, or
    when one was not measured."""
    pieces = [part.microseconds for part in parts if part.within == parent.key]
    if parent.microseconds is None or not pieces or None in pieces:
        return None
    return parent.microseconds - sum(piece for piece in pieces if piece is not None)


ESTIMATE_LABEL = "sum: floor + app in memory - use case in memory + use case on PostgreSQL"
REST_LABEL = "  the rest of it (by difference)"
GAP_LABEL = "the service less the sum: not accounted for"


def print_parts(parts: Sequence[Part], service: Run) -> None:
    """A table: where a payment's server CPU goes, part by part (each piece under its part,
    then what the part costs beyond its pieces), their sum, and beside it the service's own
    CPU per payment under load."""
    measured = service.server_ms_per_payment
    service_label = (
        f"the service under wrk, {service.connections} connections, {service.workers} worker(s)"
    )
    labels = [*(f"  {part.label}" for part in parts), ESTIMATE_LABEL, service_label, GAP_LABEL]
    width = max(len(label) for label in labels)
    say(
        "\nwhere a payment's server CPU goes (CPU microseconds per operation, median of the"
        " repetitions; bench/parts.py):"
    )
    rule = "  " + "-" * (width + 30)
    say(f"  {'part':<{width}} {'us':>7}  repetitions")
    say(rule)
    for parent in (part for part in parts if part.within is None):
        _part_row(parent.label, parent, width)
        for piece in (part for part in parts if part.within == parent.key):
            _part_row(f"  {piece.label}", piece, width)
        rest = rest_of(parent, parts)
        if rest is not None:
            say(f"  {REST_LABEL:<{width}} {rest:>7.1f}")
    say(rule)
    estimate = parts_estimate(parts)
    say(f"  {ESTIMATE_LABEL:<{width}} {_figure(estimate, 1):>7}")
    microseconds = None if measured is None else measured * 1000
    say(f"  {service_label:<{width}} {_figure(microseconds, 1):>7}")
    gap = None if microseconds is None or estimate is None else microseconds - estimate
    say(f"  {GAP_LABEL:<{width}} {_figure(gap, 1):>7}")
    say(
        "  (in-process parts: time.process_time() of the bench's process, one operation at a"
        " time, under uvloop; the floor: the server's CPU from /proc per request under wrk)"
    )


def _part_row(label: str, part: Part, width: int) -> None:
    samples = " ".join(f"{sample:.1f}" for sample in part.samples_us) or part.detail
    say(f"  {label:<{width}} {_figure(part.microseconds, 1):>7}  {samples}")


def parts_json(parts: Sequence[Part], service: Run) -> dict[str, object]:
    """The parts, what each costs beyond its pieces, their sum and the service's figure."""
    measured = service.server_ms_per_payment
    microseconds = None if measured is None else measured * 1000
    estimate = parts_estimate(parts)
    return {
        "parts": [
            {**part.as_json(), "rest_us": _rounded(rest_of(part, parts), 2)} for part in parts
        ],
        "estimate_us": _rounded(estimate, 1),
        "estimate": " ".join(f"{'-' if sign < 0 else '+'} {key}" for key, sign in ESTIMATE)[2:],
        "service_us": _rounded(microseconds, 1),
        "service_less_estimate_us": _rounded(
            None if microseconds is None or estimate is None else microseconds - estimate, 1
        ),
        "service_run": {
            "variant": service.variant,
            "workers": service.workers,
            "connections": service.connections,
        },
    }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def document(
    findings: Findings,
    found: Sequence[Target],
    *,
    wall: float,
    machine: dict[str, object],
    settings: dict[str, object],
    table_size: dict[str, object],
    connections: int,
) -> dict[str, object]:
    """The JSON record of one benchmark: no paths of the machine it ran on."""
    small, large = findings.small, findings.large
    pay = find(findings.runs, SERVICE, findings.best_workers, connections)
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(wall),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": _cpu_model(),
            "python": platform.python_version(),
            "postgres": findings.postgres,
            "database": findings.database,
            "database_cpu": findings.database_cpu,
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
        "refunds": refunds_json(
            find(findings.runs, REFUNDS, findings.best_workers, connections), pay
        ),
        "memory": findings.memory,
        "service_log_warnings_or_errors": findings.service_log_complaints,
        "verify": [verification.as_json() for verification in findings.verifications],
        "outbox_cost": None if findings.outbox is None else findings.outbox.as_json(),
        "targets": [target.as_json() for target in found],
        "parts": parts_json(findings.parts, pay) if findings.parts else None,
        "payments_match_every_run": all(run.payments_match for run in findings.runs),
        "verify_passed": all(verification.passed for verification in findings.verifications),
    }


DEFINITIONS = {
    "reference": "pgbench running the seed's transaction (BEGIN; conditional update of the"
    " order; payment insert; COMMIT), plus one nextval() per transaction to pick the order:"
    " a fixed yardstick that no change of the service's SQL moves. Its payments get their"
    " audit records and events from the harness after the runs, outside the measure",
    "ceiling": "pgbench running the service's two statements in autocommit (the read of the"
    " order and key, which takes the payment id; the guarded write: conditional update,"
    " payment insert, audit insert, for keyed the key with its answer, and the outbox's"
    " payment.succeeded event (a CloudEvent of the service's size with gen_random_uuid() for"
    " its id), in one statement, each insert taking its row from the one before), plus one"
    " nextval() per transaction to pick the order",
    "errors": "answers that are not 2xx, socket errors and timeouts (pgbench: failed"
    " transactions and aborted clients); for replays also 200s not marked replayed",
    "payments_match": "every 200 seen has its payment, and every other payment of the run's"
    " orders is a request in flight when the load stopped; service runs: every payment has"
    " its payment.succeeded event (none with the outbox off); replays: no new payment;"
    " refunds: every 201 seen has its refund and every other refund is a request in flight,"
    " every refund has its audit record and its refund.succeeded event, and no payment's"
    " refunds add up to more than its amount (nor differ from its amount_refunded)",
    "refunds": "variant 'refunds': with the best worker count at 16 connections, right after"
    " the replays, each request POST /payments/{id}/refunds with body {} (refund all that"
    " remains, no Idempotency-Key) for a payment of its own, paid beforehand in SQL with its"
    " audit record and payment.succeeded event as the service writes them (a block sized as"
    " the paying runs' blocks). In its run, ok counts 201s, payments counts the refunds"
    " written and the CPU per payment is per refund. The top-level 'refunds' sets it beside"
    " the 'service' run of the same workers and connections (ratio_to_pay: rps / its rps)",
    "table_orders": "rows in orders when the run started. Runs leave their orders behind;"
    " the size comparison empties the tables first. 10^3: the other pending orders"
    " (table_size.other_pending_orders), which nobody pays, plus the run's block of"
    " consecutive ids. 10^6: those, the 10^3 run's block (paid now) and"
    " table_size.large_paid_orders paid orders, each with its payment, audit record and event,"
    " with the run's pending orders spread evenly among them over the whole id range",
    "ratio_to_ceiling": "service rps / ceiling rps at the same connections (keyed: against"
    " the keyed ceiling)",
    "ratio_to_reference": "rps / the fixed reference's rps at the same connections (every"
    " run but the reference and replays)",
    "server_cpu_seconds": "user + system time of the service's worker processes (uvicorn's"
    " master's children, or the master serving alone) from /proc/<pid>/stat, read just"
    " before and just after the load; per payment: divided by the run's payments",
    "database_cpu_seconds": "user + system time of PostgreSQL's postmaster and all its"
    " children, those that ended during the run included (reaped children's times), read"
    " the same way; null when the server cannot be seen from this machine"
    " (machine.database_cpu says why)",
    "verify": "payment-service verify on the benchmark's database: before the size"
    " comparison empties the tables, and after the last run",
    "outbox_cost": "the service as shipped (variant 'outbox on') beside the same service"
    " with its outbox write switched off (variant 'outbox off': python -m"
    " bench.without_outbox serve, SqlOutbox.add doing nothing, a module of the benchmark's,"
    " not a setting of the product), both running, 1 worker each, at 16 connections, in"
    " turns: off, on, four times. Each side: rps = its requests over its seconds, p50_ms and"
    " p99_ms the mean of its runs', CPU per payment its CPU over its payments;"
    " ratio_on_off: on / off. After each 'off' run, outside the measure, the harness writes"
    " the events it did not (events_added_after_off), before verify",
    "latency": "wrk's percentiles of each request's time; pgbench's per-transaction log",
    "parts": "where a payment's server CPU goes (bench/parts.py), after the HTTP runs on the"
    " same database with the service stopped; null with BENCH_PARTS=0. Each part's CPU per"
    " operation is the median of 3 repetitions after a warm-up: the HTTP server floor (a bare"
    " ASGI app on uvicorn with httptools and uvloop, under wrk at 16 connections, the"
    " server's user + system time from /proc per request); then, in the bench's own process,"
    " sequentially under uvloop, time.process_time() per operation: the service's ASGI app"
    " on the in-memory store (POST /pay with synthetic ASGI messages, JSON INFO logs to"
    " os.devnull), one access log line, the pay use case on the in-memory store, the pay use"
    " case on PostgreSQL, a pool checkout and checkin, the read (GROUND_STATEMENT) and the"
    " guarded write (a WriteBatch statement with its event, on orders already paid)."
    " rest_us: a part less the pieces measured within it; estimate_us: the sum named in"
    " estimate; service_us: the service's server CPU per payment under wrk (the CPU"
    " target's run, service_run);"
    " service_less_estimate_us: the one less the other",
}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
