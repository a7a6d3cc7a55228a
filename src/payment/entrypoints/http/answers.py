"""A decision as the caller sees it (status and JSON body), and what it leaves in the
metrics and the request's log line."""

from __future__ import annotations

import json

from fastapi import Request, Response

from payment.domain.attempts import Decision, Outcome, PaymentAttempt, RecordedAnswer
from payment.domain.model import Payment
from payment.domain.services import Reply
from payment.entrypoints.http.problems import PROBLEM_JSON, problem_body
from payment.entrypoints.http.schemas import PaymentReceipt

REPLAYED_HEADER = "Idempotent-Replayed"


def answer_for(decision: Decision) -> RecordedAnswer:
    """200 and the receipt for a payment; the refusal's problem details otherwise."""
    if decision.payment is not None:
        return RecordedAnswer(200, PaymentReceipt.of(decision.payment).model_dump_json())
    if decision.refusal is None:
        raise ValueError(f"a {decision.outcome} decision carries neither payment nor refusal")
    body = problem_body(decision.refusal)
    return RecordedAnswer(body["status"], json.dumps(body, separators=(",", ":")))


def response_for(reply: Reply) -> Response:
    """The answer as it was first given; marked when it is a replay."""
    answer = reply.answer
    return Response(
        content=answer.body,
        status_code=answer.status,
        media_type="application/json" if answer.status < 400 else PROBLEM_JSON,
        headers={REPLAYED_HEADER: "true"} if reply.replayed else None,
    )


def record_decision(
    request: Request,
    attempt: PaymentAttempt,
    outcome: Outcome,
    payment: Payment | None = None,
) -> None:
    """After a decision committed: the outcome counted in the metrics, and the decision's
    fields for the request's one log line (SPEC §3.7)."""
    request.app.state.metrics.count_decision(outcome.value)
    request.state.decision = {
        "outcome": outcome.value,
        "order_id": attempt.order_id,
        "claimed_amount": str(attempt.amount),
        "payment_id": None if payment is None else payment.id,
        "idempotency_key": attempt.idempotency_key,
    }
