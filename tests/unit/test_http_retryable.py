"""The retryable refusals of SPEC §3.6 over HTTP: a write the database never confirmed, and a
hot order, are each a 503 ``service_unavailable`` with ``Retry-After`` that tells the caller
what to do; a write that failed before reaching the database says nothing was written."""

from __future__ import annotations

from payment.domain.errors import OrderBusy, StorageUnavailable, WriteUnconfirmed
from tests.unit.fakes import FailingUnitOfWork, Step, pending_order, store_with
from tests.unit.http_support import assert_problem, client_on, post_pay

BODY = '{"order_id": 1, "amount": "199.99"}'


def refused_with(error: Exception, step: Step = "commit") -> dict[str, object]:
    store = store_with(pending_order(1, "199.99"))
    with client_on(lambda: FailingUnitOfWork(store, fails_at=step, error=error)) as client:
        response = post_pay(client, BODY, headers=[("Idempotency-Key", "k-1")])
    problem = assert_problem(response, 503, "service_unavailable")
    assert int(response.headers["retry-after"]) >= 1
    return problem


def test_a_write_left_unconfirmed_asks_for_a_retry_with_the_same_key() -> None:
    problem = refused_with(WriteUnconfirmed())

    assert "same Idempotency-Key" in str(problem["detail"])
    assert "Nothing was written" not in str(problem["detail"])


def test_a_database_out_of_reach_says_nothing_was_written() -> None:
    problem = refused_with(StorageUnavailable(), step="ground")

    assert "Nothing was written" in str(problem["detail"])


def test_a_hot_order_is_refused_at_once_as_retryable() -> None:
    problem = refused_with(OrderBusy(1), step="ground")

    assert "Order 1 is being paid by another request" in str(problem["detail"])
