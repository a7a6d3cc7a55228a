"""The soak's figures: a summary and the checks on standard output, JSON, and a PNG timeline."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from chaos.checks import Check, quiet_seconds
from chaos.faults import CYCLE
from chaos.findings import Findings
from chaos.ledger import CLASSES, CLIENT_ERROR, FAILED, OK, OTHER, UNAVAILABLE, Second
from chaos.probes import Probe

COLOURS = {
    OK: "tab:green",
    CLIENT_ERROR: "tab:blue",
    UNAVAILABLE: "tab:orange",
    OTHER: "tab:red",
    FAILED: "black",
}
FAULT_COLOURS = dict(
    zip(
        CYCLE,
        ("tab:red", "tab:purple", "tab:brown", "tab:cyan", "tab:olive", "tab:pink", "tab:gray"),
        strict=True,
    )
)
MIN_SPAN_DRAWN_SECONDS = 0.6
COMPLAINTS_SHOWN = 3
LEGEND_HEADROOM = 1.45
"""The rate panel's height over its highest bar: room for the legends above the bars."""


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def p99(second: Second) -> float | None:
    if not second.latencies:
        return None
    ordered = sorted(second.latencies)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def requests(findings: Findings) -> int:
    return sum(findings.ledger.statuses.values())


def print_summary(findings: Findings) -> None:
    ledger = findings.ledger
    say("\n== What the traffic got ==")
    total = requests(findings)
    say(
        f"{total} requests in {findings.seconds} s and the drain"
        f" ({total / findings.seconds:.0f}/s); by kind and answer:"
    )
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for (kind, label), count in ledger.statuses.items():
        by_kind[kind][label] += count
    for kind in sorted(by_kind):
        answers = ", ".join(f"{label} x{n}" for label, n in by_kind[kind].most_common())
        say(f"  {kind}: {answers}")
    if findings.orders_exhausted:
        say("  note: every fresh order was taken: the clients only read after that")
    say("\n== Faults ==")
    for span in sorted(findings.spans, key=lambda span: span.started):
        say(f"  {span.started:6.1f} s - {span.ended:6.1f} s  {span.kind}: {span.detail}")
    complaints = findings.log_complaints
    counts = ", ".join(f"{n} {what}" for what, n in complaints.counts.items())
    say(f"\nthe service's log: {counts or 'no warning, error or traceback'}")
    for line in complaints.first[:COMPLAINTS_SHOWN]:
        say(f"  {line}")


def print_checks(checks: Sequence[Check]) -> None:
    say("\n== Checks ==")
    for check in checks:
        say(f"  [{'pass' if check.passed else 'FAIL'}] {check.name}")
        say(f"         {check.detail}")
        for case in check.cases:
            say(f"           - {case}")
    failed = [check for check in checks if not check.passed]
    say(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed")
    if failed:
        say("FAILED:")
        for check in failed:
            say(f"  - {check.name}")


def document(
    findings: Findings, checks: Sequence[Check], *, wall: float, machine: dict[str, object]
) -> dict[str, object]:
    ledger = findings.ledger
    last = max(ledger.seconds, default=-1)
    per_second = []
    for index in range(last + 1):
        second = ledger.seconds.get(index, Second())
        latency = p99(second)
        per_second.append(
            {
                "second": index,
                **{name: second.classes.get(name, 0) for name in CLASSES},
                "healthy_payments": second.healthy_paid,
                "p99_ms": None if latency is None else round(latency * 1000, 1),
            }
        )
    memory: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for sample in findings.memory:
        memory[sample.pid].append((round(sample.at, 1), sample.rss_mib))
    return {
        "machine": machine,
        "seconds": findings.seconds,
        "wall_seconds": round(wall),
        "limits": findings.limits.as_json(),
        "orders": {
            "fresh": findings.orders.fresh,
            "untouchable": findings.orders.untouchable,
            "exhausted": findings.orders_exhausted,
        },
        "passed": all(check.passed for check in checks),
        "checks": [check.as_json() for check in checks],
        "requests": requests(findings),
        "answers": [
            {"kind": kind, "answer": label, "count": count}
            for (kind, label), count in sorted(ledger.statuses.items())
        ],
        "payments_meant": [
            {"kind": kind, "final": final, "count": count}
            for (kind, final), count in sorted(ledger.finals.items())
        ],
        "faults": [span.as_json() for span in sorted(findings.spans, key=lambda s: s.started)],
        "quiet_seconds": len(quiet_seconds(findings)),
        "per_second": per_second,
        "livez": _probes_json(findings.livez),
        "readyz": {
            "probes": len(findings.readyz),
            "statuses": dict(
                Counter(str(p.status or p.failure) for p in findings.readyz).most_common()
            ),
        },
        "worker_rss_mib": {str(pid): samples for pid, samples in memory.items()},
        "slow_clients": [
            {"kind": c.kind, "opened": c.opened, "cut_after": _round(c.cut_after)}
            for c in findings.slow
        ],
        "service_log": {
            "counts": findings.log_complaints.counts,
            "first_lines": findings.log_complaints.first,
        },
        "verify": {"passed": findings.verified, "output": findings.verify_output},
        "postgres": findings.postgres_version,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _probes_json(probes: Sequence[Probe]) -> dict[str, object]:
    answered = sorted(p.seconds for p in probes if p.status is not None)
    slowest = sorted(probes, key=lambda p: p.seconds, reverse=True)
    return {
        "probes": len(probes),
        "max_ms": round(answered[-1] * 1000, 1) if answered else None,
        "p99_ms": round(answered[math.ceil(0.99 * len(answered)) - 1] * 1000, 1)
        if answered
        else None,
        "not_200": sum(1 for p in probes if p.status != 200),
        "slowest": [
            {"at": round(p.at, 2), "ms": round(p.seconds * 1000, 1), "status": p.status}
            for p in slowest[:10]
        ],
    }


def write_json(path: Path, record: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def write_chart(path: Path, findings: Findings, title: str) -> bool:
    """Three panels over the soak's seconds, the faults shaded on each: requests per second
    by how they ended; p99 latency per second, with /livez; each worker's resident memory.
    False when matplotlib is missing (``pip install -e '.[chaos]'``)."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    matplotlib.use("Agg")
    from matplotlib import pyplot  # type: ignore[import-not-found,unused-ignore]
    from matplotlib.patches import Patch  # type: ignore[import-not-found,unused-ignore]

    ledger = findings.ledger
    last = max(ledger.seconds, default=0)
    xs = list(range(last + 1))
    seconds = [ledger.seconds.get(x, Second()) for x in xs]
    figure, (rate_axes, latency_axes, memory_axes) = pyplot.subplots(
        3, 1, figsize=(12, 8.5), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1.3]}
    )
    bottom = [0] * len(xs)
    for name in CLASSES:
        counts = [second.classes.get(name, 0) for second in seconds]
        rate_axes.bar(
            xs, counts, width=1.0, bottom=bottom, color=COLOURS[name], label=name, align="edge"
        )
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    rate_axes.set_ylim(0, max(bottom, default=0) * LEGEND_HEADROOM or 1)
    rate_axes.set_ylabel("requests per second")
    rate_axes.set_title("Requests ending each second, by answer")

    latencies = [p99(second) for second in seconds]
    latency_axes.plot(
        [x + 0.5 for x, v in zip(xs, latencies, strict=True) if v is not None],
        [v * 1000 for v in latencies if v is not None],
        color="tab:blue",
        label="requests: p99",
    )
    latency_axes.plot(
        [p.at for p in findings.livez],
        [p.seconds * 1000 for p in findings.livez],
        ".",
        markersize=2,
        color="tab:green",
        label="/livez (each probe)",
    )
    latency_axes.axhline(findings.limits.livez_seconds * 1000, color="tab:green", linestyle=":")
    latency_axes.axhline(findings.limits.answer_bound * 1000, color="tab:blue", linestyle=":")
    latency_axes.set_yscale("log")
    latency_axes.set_ylabel("milliseconds")
    latency_axes.set_title(
        f"Latency (log); dotted: /livez limit {findings.limits.livez_seconds:g} s,"
        f" answer bound {findings.limits.answer_bound:g} s"
    )
    latency_axes.legend(fontsize="small", loc="upper left")

    memory: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for sample in findings.memory:
        memory[sample.pid].append((sample.at, sample.rss_mib))
    for pid, samples in memory.items():
        memory_axes.plot([at for at, _ in samples], [rss for _, rss in samples], label=str(pid))
    memory_axes.set_ylim(bottom=0)
    memory_axes.set_ylabel("MiB")
    memory_axes.set_title("Each worker's resident memory")
    memory_axes.set_xlabel("seconds")

    for axes in (rate_axes, latency_axes, memory_axes):
        for span in findings.spans:
            end = max(span.ended, span.started + MIN_SPAN_DRAWN_SECONDS)
            axes.axvspan(span.started, end, color=FAULT_COLOURS[span.kind], alpha=0.18, lw=0)
        axes.grid(alpha=0.3)
        axes.set_xlim(0, last + 1)
    shown = [kind for kind in CYCLE if any(span.kind == kind for span in findings.spans)]
    status_legend = rate_axes.legend(fontsize="small", loc="upper left", title="answer")
    rate_axes.add_artist(status_legend)
    rate_axes.legend(
        handles=[Patch(color=FAULT_COLOURS[kind], alpha=0.35, label=kind) for kind in shown],
        fontsize="small",
        loc="upper right",
        title="fault",
    )
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    pyplot.close(figure)
    return True
