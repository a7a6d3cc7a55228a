"""pgbench straight at the database: the ceiling and the fixed reference.

The ceiling is the service's own statements (``ceiling.sql``, ``ceiling_keyed.sql``): the
most the database does with what the service asks of it. The reference (``reference.sql``)
is the seed's transaction, which follows nothing the service does: a yardstick that no
change of the service's SQL moves.

pgbench runs with ``-M prepared``, as the service does in effect: psycopg 3 prepares a
statement on the server once a connection has run it ``prepare_threshold`` (5) times, and
the service sends the same text for each of its statements. Its sessions get the service's
settings (statement and lock timeouts, UTC). Latency percentiles come from pgbench's
per-transaction log.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from bench.database import Database
from bench.results import Load, percentile
from bench.tools import pgbench_path
from payment.adapters.settings import Settings

REFERENCE_SCRIPT = Path(__file__).with_name("reference.sql")
PLAIN_SCRIPT = Path(__file__).with_name("ceiling.sql")
KEYED_SCRIPT = Path(__file__).with_name("ceiling_keyed.sql")
_DEFAULTS = Settings.model_fields
SERVICE_SESSION = (
    f"-c statement_timeout={_DEFAULTS['payment_db_statement_timeout_ms'].default}"
    f" -c lock_timeout={_DEFAULTS['payment_db_lock_timeout_ms'].default} -c timezone=UTC"
)
"""What the service's engine sets on each of its connections, with its default settings."""

_PROCESSED = re.compile(r"number of transactions actually processed: (\d+)")
_FAILED = re.compile(r"number of failed transactions: (\d+)")
_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")
_ABORTED = re.compile(r"client \d+ .*aborted")


def run_pgbench(
    database: Database, script: Path, *, connections: int, seconds: int, work_dir: Path
) -> Load:
    """``script`` on ``connections`` clients (at most two pgbench threads) for ``seconds``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    log_prefix = work_dir / "tx"
    params = database.libpq()
    command = [
        pgbench_path(),
        "--no-vacuum",
        "--protocol=prepared",
        f"--file={script}",
        f"--client={connections}",
        f"--jobs={min(connections, 2)}",
        f"--time={seconds}",
        "--log",
        f"--log-prefix={log_prefix}",
        f"--host={params['host']}",
        f"--username={params['user']}",
    ]
    if "port" in params:
        command.append(f"--port={params['port']}")
    command.append(params["dbname"])
    environment = {**os.environ, "PGOPTIONS": SERVICE_SESSION, "PGAPPNAME": "payment-bench"}
    if "password" in params:
        environment["PGPASSWORD"] = params["password"]
    finished = subprocess.run(  # noqa: S603 - our own arguments, no shell
        command,
        env=environment,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
    )
    output = finished.stdout + finished.stderr
    processed = _number(_PROCESSED, output)
    found_tps = _TPS.search(output)
    tps = float(found_tps.group(1)) if found_tps else 0.0
    failed = _number(_FAILED, output)
    aborted = len(_ABORTED.findall(finished.stderr))
    if processed is None or (finished.returncode not in (0, 2)):
        raise RuntimeError(f"pgbench failed (status {finished.returncode}):\n{output[-2000:]}")
    latencies = sorted(_latencies_ms(work_dir, log_prefix.name))
    return Load(
        requests=processed,
        seconds=processed / tps if tps > 0 else float(seconds),
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        statuses={"committed": processed, "failed": failed or 0},
        errors=(failed or 0) + aborted,
        ok=processed,
    )


def _number(pattern: re.Pattern[str], text: str) -> int | None:
    found = pattern.search(text)
    return int(found.group(1)) if found else None


def _latencies_ms(folder: Path, prefix: str) -> list[float]:
    """Each committed transaction's latency from pgbench's logs (one file per thread):
    ``client transaction latency_us script epoch epoch_us``."""
    latencies: list[float] = []
    for log in folder.glob(f"{prefix}.*"):
        with log.open() as lines:
            for line in lines:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]) / 1000)
        log.unlink()
    return latencies
