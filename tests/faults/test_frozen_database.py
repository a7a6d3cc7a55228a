"""A database that hangs, then a path to it that goes silent, under a running service with many
clients paying (SPEC §3.6): every payment is answered within the request deadline, 503 with
``Retry-After`` while the database is silent; /livez stays fast, /readyz is bounded by its own
timeout, /metrics answers; the connections cut are closed, not kept; and once the database
answers again, payments go through by themselves and every refused one, retried with its key,
is paid exactly once."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.e2e.server import running_service
from tests.faults.load import Answer, PayCall, PaymentLoad, wait_until
from tests.faults.observations import Observe, explained, last_lines
from tests.faults.problems import assert_unavailable
from tests.support.aftermath import FaultDatabase, assert_paid_once, assert_verified
from tests.support.frozen_postgres import frozen
from tests.support.orders import add_orders
from tests.support.probe_sampler import Probes
from tests.support.restartable_postgres import RestartablePostgres
from tests.support.silent_link import SilenceableLink

pytestmark = pytest.mark.faults

WORKERS = 2
CLIENTS = 32
DEADLINE = 0.8
READY_TIMEOUT = 0.3
SILENT_SECONDS = 2.0
"""How long each fault lasts: two and a half deadlines."""
SLACK = 1.0
"""What a busy machine may add to a bound before a test calls it broken."""
LIVEZ_BOUND = 0.1
RECOVERY_SECONDS = 30.0
RETRY_ROUNDS = 3


def lanes_of(database: FaultDatabase) -> tuple[dict[int, str], list[list[PayCall]]]:
    """Orders enough for every client, each call with a key of its own."""
    per_lane = 40
    amounts = [f"{10 + n // 100}.{n % 100:02d}" for n in range(CLIENTS * per_lane)]
    order_ids = add_orders(database.engine, *amounts)
    totals = dict(zip(order_ids, amounts, strict=True))
    calls = [PayCall(o, totals[o], key=f"frozen-{o}") for o in order_ids]
    return totals, [calls[lane::CLIENTS] for lane in range(CLIENTS)]


def silent_for(
    fault: Callable[[], AbstractContextManager[None]], load: PaymentLoad
) -> tuple[float, float]:
    """``fault`` for SILENT_SECONDS, with the load running; when it began and ended."""
    with fault():
        began = time.monotonic()
        time.sleep(SILENT_SECONDS)
        ended = time.monotonic()
    return began, ended


def paid_since(load: PaymentLoad, moment: float, count: int) -> Callable[[], bool]:
    return lambda: load.count(lambda a: a.status == 200 and a.started > moment) >= count


def assert_bounded(answers: list[Answer], output: str) -> list[Answer]:
    """Every call answered, 200 or 503, within the deadline; the 503s well formed."""
    unanswered = [a for a in answers if a.response is None]
    assert unanswered == [], f"{unanswered}\n{output}"
    unexpected = [(a.status, a.response.text if a.response else "") for a in answers]
    assert [u for u in unexpected if u[0] not in (200, 503)] == [], output
    late = [(a.status, round(a.elapsed, 3)) for a in answers if a.elapsed > DEADLINE + SLACK]
    assert late == [], f"answered after the deadline: {late}\n{output}"
    refused = [a for a in answers if a.status == 503]
    for answer in refused:
        assert answer.response is not None
        assert_unavailable(answer.response)
    return refused


def retried(base_url: str, refused: list[Answer]) -> dict[int, int]:
    """Each refused call sent again with its key, as a client keeps to the contract: again on
    a 503 (a busy machine may still miss a short deadline now and then). The receipts, by
    order."""
    receipts: dict[int, int] = {}
    pending = [answer.call for answer in refused]
    for _ in range(RETRY_ROUNDS):
        retries = PaymentLoad(base_url, [pending[lane::8] for lane in range(8)])
        retries.start()
        retries.join(timeout=RECOVERY_SECONDS)
        pending = []
        for answer in retries.answers:
            assert answer.response is not None, answer
            if answer.status == 503:
                pending.append(answer.call)
                continue
            assert answer.status == 200, answer.response.text
            receipts[answer.call.order_id] = answer.payment_id()
        if not pending:
            break
    assert pending == [], f"still refused after {RETRY_ROUNDS} rounds: {pending}"
    return receipts


def ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"


@pytest.fixture
def link(fault_database: FaultDatabase) -> Iterator[SilenceableLink]:
    with SilenceableLink.to(fault_database.url) as link:
        yield link


def test_a_frozen_database_then_a_silent_link_get_503_within_the_deadline_and_probes_stay_fast(
    fault_postgres: RestartablePostgres,
    fault_database: FaultDatabase,
    link: SilenceableLink,
    tmp_path: Path,
    observe: Observe,
) -> None:
    totals, lanes = lanes_of(fault_database)
    settings = fault_database.service_settings(
        DATABASE_URL=link.url_through(fault_database.url).render_as_string(hide_password=False),
        PAYMENT_REQUEST_DEADLINE_MS=str(int(DEADLINE * 1000)),
        PAYMENT_READY_TIMEOUT_MS=str(int(READY_TIMEOUT * 1000)),
        PAYMENT_DB_POOL_SIZE="5",
    )

    with running_service(settings, tmp_path, workers=WORKERS) as service:
        load = PaymentLoad(service.base_url, lanes, pause=0.01)
        paid_after: list[float] = []
        with Probes(service.base_url, tmp_path) as probes:
            load.start()
            try:
                windows = []
                for name, fault in (
                    ("frozen", lambda: frozen(fault_postgres.data_dir)),
                    ("silent", link.silenced),
                ):
                    wait_until(
                        lambda: load.count(lambda a: a.status == 200) >= 2 * CLIENTS,
                        timeout=RECOVERY_SECONDS,
                        what=explained(f"payments before the {name} fault", service),
                    )
                    ends_before = len(link.ended_by_client)
                    began, ended = silent_for(fault, load)
                    windows.append((name, began, ended, len(link.ended_by_client) - ends_before))
                    paid_after.append(
                        wait_until(
                            paid_since(load, ended, CLIENTS),
                            timeout=RECOVERY_SECONDS,
                            what=explained(f"payments after the {name} fault", service),
                        )
                    )
            finally:
                load.stop()
        answers = load.answers
        output = last_lines(service.output())
        refused = assert_bounded(answers, output)
        receipts = {a.call.order_id: a.payment_id() for a in answers if a.status == 200}
        receipts.update(retried(service.base_url, refused))

    observe("statuses", dict(Counter(a.status for a in answers)))
    observe("503_in", ms([a.elapsed for a in refused]))
    for (name, began, ended, closed), recovered in zip(windows, paid_after, strict=True):
        during = [a for a in answers if a.started >= began and a.started + a.elapsed <= ended]
        livez = probes.between("/livez", began, ended)
        readyz = probes.between("/readyz", began + READY_TIMEOUT + 1, ended)
        metrics = probes.between("/metrics", began, ended)
        observe(f"{name}_calls", len(during))
        observe(f"{name}_livez", ms([took for _, took in livez]))
        observe(f"{name}_readyz", ms([took for _, took in readyz]))
        observe(f"{name}_connections_closed", closed)
        observe(f"{name}_recovered_in", f"{recovered:.2f}s")
        assert len(during) >= CLIENTS // 2, (name, len(during))
        assert {a.status for a in during} == {503}, name
        assert livez, name
        assert all(status == 200 and took < LIVEZ_BOUND for status, took in livez), (name, livez)
        assert readyz, name
        assert all(s == 503 and took < READY_TIMEOUT + SLACK for s, took in readyz), readyz
        assert all(status == 200 and took < SLACK for status, took in metrics), (name, metrics)
    # On the silent link, the connections cut by the deadline were closed by the service.
    assert windows[1][3] >= 1
    assert_paid_once(fault_database.engine, totals, receipts)
    assert_verified(fault_database)
