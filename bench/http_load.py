"""The service over HTTP: wrk with ``pay.lua``, each request paying an order of its own (or
refunding a payment of its own)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from bench.database import Block
from bench.results import Load
from bench.tools import wrk_path

LUA_SCRIPT = Path(__file__).with_name("pay.lua")
OK = "200"
CREATED = "201"
"""A refund's success."""
TIMEOUT = "5s"
"""wrk's bound on one request; a request slower than that counts as a timeout error."""


def run_wrk(
    base_url: str,
    *,
    connections: int,
    seconds: int,
    block: Block,
    key_prefix: str | None = None,
    replay_ids: Path | None = None,
    refund: bool = False,
) -> Load:
    """POST /pay on ``connections`` connections (at most two wrk threads) for ``seconds``,
    one order of ``block`` per request; with an Idempotency-Key when ``key_prefix`` is
    given; or, with ``replay_ids``, the keyed requests for those orders again. ``refund``:
    POST /payments/{id}/refunds instead, ``{}`` (all of it), one payment id of ``block`` per
    request; its successes are 201s."""
    threads = min(connections, 2)
    if refund:
        mode = "refund"
    elif replay_ids is not None:
        mode = "replay"
    else:
        mode = "keyed" if key_prefix else "plain"
    command = [
        wrk_path(),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={seconds}s",
        f"--timeout={TIMEOUT}",
        "--latency",
        f"--script={LUA_SCRIPT}",
        base_url,
        "--",
        str(block.first),
        str(block.stride),
        str(block.count),
        str(threads),
        mode,
        key_prefix or "",
    ]
    if replay_ids is not None:
        command.append(str(replay_ids))
    finished = subprocess.run(  # noqa: S603 - our own arguments, no shell
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    for line in finished.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line.removeprefix("BENCH_RESULT "))
            return _load(result, success=CREATED if refund else OK)
    raise RuntimeError(
        f"wrk gave no result (status {finished.returncode}):\n"
        + (finished.stdout + finished.stderr)[-2000:]
    )


def _load(result: Any, *, success: str) -> Load:
    """``result`` is the JSON line of ``done()`` in pay.lua; ``success`` the status of a
    request that did what it asked."""
    statuses = {str(status): int(n) for status, n in result["statuses"].items()}
    latency_us = result["latency_us"]
    socket_errors = sum(int(n) for n in result["socket_errors"].values())
    requests = int(result["requests"])
    not_2xx = sum(n for status, n in statuses.items() if not status.startswith("2"))
    return Load(
        requests=requests,
        seconds=int(result["duration_us"]) / 1e6,
        p50_ms=int(latency_us["p50"]) / 1000,
        p90_ms=int(latency_us["p90"]) / 1000,
        p99_ms=int(latency_us["p99"]) / 1000,
        statuses=dict(sorted(statuses.items())),
        errors=not_2xx + socket_errors,
        ok=statuses.get(success, 0),
        in_flight=max(0, int(result["sent"]) - requests),
        past_block=int(result["past_block"]),
        replayed=int(result["replayed"]),
    )
