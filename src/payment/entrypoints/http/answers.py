"""A decision as the caller sees it: status and JSON body, kept for replays."""

from __future__ import annotations

import json

from fastapi import Response

from payment.domain.attempts import Decision, RecordedAnswer
from payment.domain.refunding import RefundReply
from payment.domain.refunds import RefundDecision
from payment.domain.services import Reply
from payment.entrypoints.http.problems import PROBLEM_JSON, problem_body
from payment.entrypoints.http.schemas import PaymentReceipt, RefundView

REPLAYED_HEADER = "Idempotent-Replayed"


def answer_for(decision: Decision) -> RecordedAnswer:
    """200 and the receipt for a payment; the refusal's problem details otherwise."""
    if decision.payment is not None:
        return RecordedAnswer(200, PaymentReceipt.of(decision.payment).model_dump_json())
    if decision.refusal is None:
        raise ValueError(f"a {decision.outcome} decision carries neither payment nor refusal")
    body = problem_body(decision.refusal)
    return RecordedAnswer(body["status"], json.dumps(body, separators=(",", ":")))


def refund_answer_for(decision: RefundDecision) -> RecordedAnswer:
    """201 and the refund; the refusal's problem details otherwise."""
    if decision.refund is not None:
        return RecordedAnswer(201, RefundView.of(decision.refund).model_dump_json())
    if decision.refusal is None:
        raise ValueError(f"a {decision.outcome} decision carries neither refund nor refusal")
    body = problem_body(decision.refusal)
    return RecordedAnswer(body["status"], json.dumps(body, separators=(",", ":")))


def response_for(reply: Reply | RefundReply) -> Response:
    """The answer as it was first given; marked when it is a replay."""
    answer = reply.answer
    return Response(
        content=answer.body,
        status_code=answer.status,
        media_type="application/json" if answer.status < 400 else PROBLEM_JSON,
        headers={REPLAYED_HEADER: "true"} if reply.replayed else None,
    )
