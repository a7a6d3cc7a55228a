"""The checks made once the soak is over: what the service promised (SPEC §3), held against
what the traffic saw, what the probes saw and what the database holds."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass

from chaos.faults import HOT_ORDER_LOCKED, SLOW_CLIENTS, WORKER_KILLED, Span
from chaos.findings import Findings
from chaos.ledger import Samples
from chaos.probes import Probe
from chaos.slow_clients import SILENT, SLOW_BODY, SLOW_HEAD

KILL_WINDOW_BEFORE_SECONDS = 0.5
KILL_WINDOW_AFTER_SECONDS = 2.0
"""A connection cut this close to a worker's kill is the kill's doing."""
QUIET_BEFORE_SECONDS, QUIET_AFTER_SECONDS = 1.0, 3.0
"""Seconds this close to a fault are not fault-free."""
WARM_UP_SECONDS = 2
LINES_SHOWN = 5


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    detail: str
    cases: tuple[str, ...] = ()
    """The first cases that failed it."""

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "passed": self.passed,
            "detail": self.detail,
            "cases": list(self.cases),
        }


def evaluate(findings: Findings) -> list[Check]:
    return [
        _verify(findings),
        _every_200_has_its_payment(findings),
        _no_payment_unaccounted(findings),
        _payments_final(findings),
        _bad_input_never_pays(findings),
        _statuses(findings),
        _answered_in_time(findings),
        _cuts_only_by_kills(findings),
        _livez(findings),
        _hot_order_isolated(findings),
        _memory(findings),
        _slow_clients_cut(findings),
        _faults_injected(findings),
        _recovered(findings),
    ]


def _samples(samples: Samples) -> tuple[str, ...]:
    return tuple(samples.first)


def _verify(findings: Findings) -> Check:
    lines = findings.verify_output.splitlines()
    return Check(
        "payment-service verify is clean",
        findings.verified,
        lines[-1] if lines else "no output",
        () if findings.verified else tuple(lines[:LINES_SHOWN]),
    )


def _every_200_has_its_payment(findings: Findings) -> Check:
    ledger, payments = findings.ledger, findings.store.payments
    cases = list(ledger.conflicts.first)
    wrong = ledger.conflicts.count
    for order_id, payment_id in ledger.paid.items():
        stored = payments.get(order_id, [])
        if stored != [payment_id]:
            wrong += 1
            if len(cases) < LINES_SHOWN:
                cases.append(f"order {order_id}: answered payment {payment_id}, stored {stored}")
    return Check(
        "every 200 has exactly its payment",
        wrong == 0,
        f"{len(ledger.paid)} orders answered 200; {wrong} without exactly the payment named",
        tuple(cases),
    )


def _no_payment_unaccounted(findings: Findings) -> Check:
    """Of the fresh orders: the untouchable ones are the next check's."""
    ledger, fresh = findings.ledger, findings.orders.fresh
    payments = {o: ids for o, ids in findings.store.payments.items() if o <= fresh}
    named = sum(1 for order_id in payments if order_id in ledger.paid)
    lost = [o for o in payments if o not in ledger.paid and o in ledger.ambiguous]
    unaccounted = [o for o in payments if o not in ledger.paid and o not in ledger.ambiguous]
    return Check(
        "no payment that no answer accounts for",
        not unaccounted,
        f"{sum(len(p) for p in payments.values())} payments of fresh orders stored:"
        f" {named} named by a 200,"
        f" {len(lost)} of orders whose 200 may have been lost (an attempt cut, timed out or"
        f" answered 5xx), {len(unaccounted)} of neither",
        tuple(
            f"order {order_id}: payments {payments[order_id]}"
            for order_id in unaccounted[:LINES_SHOWN]
        ),
    )


def _payments_final(findings: Findings) -> Check:
    ledger = findings.ledger
    finals = Counter[str]()
    for (kind, _), count in ledger.finals.items():
        finals[kind] += count
    failed = ledger.unresolved.count + ledger.unexpected_finals.count
    intents = sum(finals.values())
    return Check(
        "every payment retried to a final answer (with the same key), as its kind allows",
        failed == 0,
        f"{intents} payments meant ({', '.join(f'{n} {k}' for k, n in sorted(finals.items()))});"
        f" {ledger.unresolved.count} without a final answer in their bound,"
        f" {ledger.unexpected_finals.count} with a final answer their kind does not allow",
        _samples(ledger.unresolved) + _samples(ledger.unexpected_finals),
    )


def _bad_input_never_pays(findings: Findings) -> Check:
    ledger, orders = findings.ledger, findings.orders
    touched = orders.untouchable - findings.store.untouched_pending
    return Check(
        "wrong amounts and bad bodies never pay",
        ledger.bad_input_paid.count == 0 and touched == 0,
        f"{ledger.bad_input_paid.count} answered 200; {touched} of the {orders.untouchable}"
        " orders they were sent for are no longer pending",
        _samples(ledger.bad_input_paid),
    )


def _statuses(findings: Findings) -> Check:
    ledger = findings.ledger
    failures = Counter[str]()
    for (_, label), count in ledger.statuses.items():
        if not label[:1].isdigit():
            failures[label] += count
    others = ", ".join(f"{n} {label}" for label, n in sorted(failures.items())) or "none"
    return Check(
        "no status but 200, 4xx and 503, and every 503 with Retry-After",
        ledger.unexpected.count == 0 and ledger.no_retry_after.count == 0,
        f"{ledger.unexpected.count} other statuses, {ledger.no_retry_after.count} 503s without"
        f" Retry-After; requests with no answer (counted apart): {others}",
        _samples(ledger.unexpected) + _samples(ledger.no_retry_after),
    )


def _answered_in_time(findings: Findings) -> Check:
    ledger, limits = findings.ledger, findings.limits
    latencies = [s for second in ledger.seconds.values() for s in second.latencies]
    slowest = max(latencies, default=0.0)
    return Check(
        f"every request answered within {limits.answer_bound:g} s (the request deadline,"
        f" {limits.deadline_seconds:g} s, and {limits.answer_slack_seconds:g} s)",
        ledger.late.count == 0,
        f"{ledger.late.count} answered later or not at all; the slowest answer took"
        f" {slowest:.2f} s",
        _samples(ledger.late),
    )


def _kill_windows(spans: list[Span]) -> list[tuple[float, float]]:
    return [
        (span.started - KILL_WINDOW_BEFORE_SECONDS, span.ended + KILL_WINDOW_AFTER_SECONDS)
        for span in spans
        if span.kind == WORKER_KILLED
    ]


def _within(moment: float, windows: list[tuple[float, float]]) -> bool:
    return any(start <= moment <= end for start, end in windows)


def _cuts_only_by_kills(findings: Findings) -> Check:
    windows = _kill_windows(findings.spans)
    failures = findings.ledger.connection_failures
    outside = [moment for moment in failures if not _within(moment, windows)]
    return Check(
        "connections refused or cut only when a worker is killed",
        not outside,
        f"{len(failures)} requests found their connection refused or cut,"
        f" {len(outside)} away from a killed worker",
        tuple(f"at {moment:.1f} s" for moment in outside[:LINES_SHOWN]),
    )


def _livez(findings: Findings) -> Check:
    limit = findings.limits.livez_seconds
    windows = _kill_windows(findings.spans)
    probes = findings.livez
    slow = [p for p in probes if p.status is not None and p.seconds > limit]
    unanswered = [p for p in probes if p.status != 200 and not _within(p.at, windows)]
    answered = sorted(p.seconds for p in probes if p.status is not None)
    failed = slow + unanswered
    return Check(
        f"/livez never over {limit:g} s",
        bool(probes) and not failed,
        f"{len(probes)} probes, p50 {_ms(_quantile(answered, 0.5))},"
        f" p99 {_ms(_quantile(answered, 0.99))}, max {_ms(max(answered, default=None))};"
        f" {len(slow)} over {limit:g} s, {len(unanswered)} not 200 away from a killed worker",
        tuple(_probe_case(p) for p in failed[:LINES_SHOWN]),
    )


def _probe_case(probe: Probe) -> str:
    said = probe.status if probe.status is not None else probe.failure
    return f"at {probe.at:.1f} s: {said} after {probe.seconds:.2f} s"


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def _quantile(ordered: list[float], share: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def quiet_seconds(findings: Findings) -> list[int]:
    """Seconds of traffic away from every fault (the slow clients' aside)."""
    spans = [span for span in findings.spans if span.kind != SLOW_CLIENTS]
    return [
        second
        for second in range(WARM_UP_SECONDS, findings.seconds)
        if not any(
            span.started - QUIET_BEFORE_SECONDS <= second + 1
            and second <= span.ended + QUIET_AFTER_SECONDS
            for span in spans
        )
    ]


def _hot_order_isolated(findings: Findings) -> Check:
    """While a hot order is locked and stormed: the other orders pay at (a share of) their
    fault-free rate, and /readyz stays 200."""
    seconds = findings.ledger.seconds
    quiet = [seconds[s].healthy_paid if s in seconds else 0 for s in quiet_seconds(findings)]
    baseline = statistics.median(quiet) if quiet else 0.0
    share = findings.limits.hot_share
    cases, rates = [], []
    for span in (s for s in findings.spans if s.kind == HOT_ORDER_LOCKED):
        inside = range(math.floor(span.started) + 1, math.floor(span.ended))
        paid = [seconds[s].healthy_paid if s in seconds else 0 for s in inside]
        rate = statistics.mean(paid) if paid else 0.0
        rates.append(rate)
        ready = [p for p in findings.readyz if span.started + 0.5 <= p.at <= span.ended]
        not_ready = [p for p in ready if p.status != 200]
        if rate < share * baseline or not_ready:
            cases.append(
                f"{span.detail} at {span.started:.1f} s: {rate:.0f} payments/s,"
                f" /readyz not 200 {len(not_ready)} of {len(ready)} times"
            )
    held = sum(1 for s in findings.spans if s.kind == HOT_ORDER_LOCKED)
    return Check(
        f"one locked order leaves the others paying (>= {share:g} x the fault-free rate)"
        " and /readyz 200",
        held > 0 and baseline > 0 and not cases,
        f"fault-free: {baseline:.0f} payments/s (median of {len(quiet)} s); while locked:"
        f" {', '.join(f'{rate:.0f}' for rate in rates) or 'never locked'} payments/s",
        tuple(cases[:LINES_SHOWN]),
    )


def _memory(findings: Findings) -> Check:
    limit = findings.limits.max_worker_rss_mib
    by_worker: dict[int, list[float]] = defaultdict(list)
    for sample in findings.memory:
        by_worker[sample.pid].append(sample.rss_mib)
    over = [
        f"worker {pid}: {max(rss):.0f} MiB" for pid, rss in by_worker.items() if max(rss) > limit
    ]
    summary = "; ".join(
        f"worker {pid}: {rss[0]:.0f} -> max {max(rss):.0f} -> {rss[-1]:.0f} MiB"
        for pid, rss in by_worker.items()
    )
    return Check(
        f"every worker's resident memory under {limit:g} MiB",
        bool(by_worker) and not over,
        summary or "no sample",
        tuple(over[:LINES_SHOWN]),
    )


def _slow_clients_cut(findings: Findings) -> Check:
    limits = findings.limits
    bound = {
        SILENT: limits.idle_seconds,
        SLOW_HEAD: limits.header_seconds,
        SLOW_BODY: limits.body_seconds,
    }
    by_kind: dict[str, list[float | None]] = defaultdict(list)
    unopened = 0
    for client in findings.slow:
        if client.opened:
            by_kind[client.kind].append(client.cut_after)
        else:
            unopened += 1
    cases, parts = [], []
    for kind, cuts in sorted(by_kind.items()):
        allowed = bound[kind] + limits.cut_slack_seconds
        late = [cut for cut in cuts if cut is None or cut > allowed]
        closed = [cut for cut in cuts if cut is not None]
        slowest = f", the last after {max(closed):.1f} s" if closed else ""
        parts.append(f"{kind}: {len(closed)} of {len(cuts)} closed{slowest}")
        if late:
            cases.append(f"{kind}: {len(late)} of {len(cuts)} not closed within {allowed:g} s")
    return Check(
        "slow clients closed by the service within its time limits"
        f" (+{limits.cut_slack_seconds:g} s)",
        bool(findings.slow) and not cases,
        "; ".join(parts) + (f"; {unopened} could not connect" if unopened else ""),
        tuple(cases),
    )


def _faults_injected(findings: Findings) -> Check:
    kinds = Counter(span.kind for span in findings.spans)
    return Check(
        "every fault injected as planned",
        not findings.fault_errors and len(findings.spans) == len(findings.plan),
        f"{len(findings.spans)} of {len(findings.plan)}: "
        + ", ".join(f"{n} x {kind}" for kind, n in kinds.items()),
        tuple(findings.fault_errors[:LINES_SHOWN]),
    )


def _recovered(findings: Findings) -> Check:
    return Check(
        "recovered by itself: /readyz 200 and a new payment paid after the faults",
        findings.recovery is None,
        findings.recovery or "yes",
    )
