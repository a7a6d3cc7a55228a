"""The payment rules as properties, over many generated amounts and attempts."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.domain import services
from payment.domain.attempts import Outcome, PaymentAttempt, RecordedAnswer
from payment.domain.errors import AmountMismatch
from payment.domain.model import Money, OrderStatus
from payment.entrypoints.http.body import decode_json_object, validate
from payment.entrypoints.http.schemas import PayRequest
from tests.support.attempts import CALLER, attempt, plain_answer
from tests.unit.fakes import (
    FixedClock,
    InterleavedUnitOfWork,
    RecordingAnswers,
    all_at_once,
    pay,
    pending_order,
    store_with,
)

MAX_CENTS = 9_999_999_999
cents = st.integers(min_value=1, max_value=MAX_CENTS)


def decimal_of(whole_cents: int) -> Decimal:
    """The amount of ``whole_cents`` cents, built from its digits: never through a float."""
    sign, digits = (1, str(-whole_cents)) if whole_cents < 0 else (0, str(whole_cents))
    return Decimal((sign, tuple(int(digit) for digit in digits), -2))


def plain_text(whole_cents: int) -> str:
    whole, fraction = divmod(whole_cents, 100)
    return f"{whole}.{fraction:02d}"


@st.composite
def exact_exponent_texts(draw: st.DrawFn, whole_cents: int) -> str:
    """``whole_cents / 100`` written with an exponent, the point anywhere in the digits:
    12345 cents as 12345e-2, 1234.5e-1, 1.2345E+2 ..."""
    digits = str(whole_cents)
    point = draw(st.integers(min_value=1, max_value=len(digits)))
    mantissa = digits[:point] + ("." + digits[point:] if digits[point:] else "")
    exponent = len(digits) - point - 2
    marker = draw(st.sampled_from(["e", "E"]))
    sign = "+" if exponent >= 0 and draw(st.booleans()) else ""
    return f"{mantissa}{marker}{sign}{exponent}"


@settings(max_examples=150)
@given(total=cents, claimed=cents)
def test_every_amount_different_from_the_total_is_refused_and_writes_nothing(
    total: int, claimed: int
) -> None:
    if claimed == total:
        claimed = total + 1 if total < MAX_CENTS else total - 1
    store = store_with(pending_order(order_id=1, total=plain_text(total)))
    orders_before = {key: replace(order) for key, order in store.orders.items()}
    answers = RecordingAnswers()

    reply = asyncio.run(
        services.pay(
            attempt(1, Money(decimal_of(claimed))),
            uow=InMemoryUnitOfWork(store),
            clock=FixedClock(),
            answer_for=answers,
        )
    )

    [decision] = answers.decisions
    assert reply.outcome is Outcome.AMOUNT_MISMATCH
    assert isinstance(decision.refusal, AmountMismatch)
    assert plain_text(total) not in str(decision.refusal)
    assert store.orders == orders_before
    assert store.payments == {}
    assert [record.outcome for record in store.audit] == [Outcome.AMOUNT_MISMATCH]


@settings(max_examples=150)
@given(amount=cents, order_id=st.integers(min_value=1, max_value=2_147_483_647))
def test_every_two_decimal_json_number_is_read_exactly(amount: int, order_id: int) -> None:
    text = plain_text(amount)
    body = f'{{"order_id": {order_id}, "amount": {text}}}'.encode()

    request = validate(PayRequest, decode_json_object(body))

    assert request.order_id == order_id
    assert request.amount.amount == decimal_of(amount)
    assert request.amount.amount.as_tuple() == Decimal(text).as_tuple()


@settings(max_examples=150)
@given(amount=cents)
def test_every_two_decimal_string_is_read_exactly(amount: int) -> None:
    text = plain_text(amount)
    body = f'{{"order_id": 1, "amount": "{text}"}}'.encode()

    request = validate(PayRequest, decode_json_object(body))

    assert request.amount.amount == decimal_of(amount)
    assert request.amount.amount.as_tuple() == Decimal(text).as_tuple()


@settings(max_examples=150)
@given(data=st.data(), amount=cents)
def test_every_exact_exponent_form_is_read_exactly(data: st.DataObject, amount: int) -> None:
    text = data.draw(exact_exponent_texts(amount))
    body = f'{{"order_id": 1, "amount": {text}}}'.encode()

    request = validate(PayRequest, decode_json_object(body))

    assert request.amount.amount == decimal_of(amount)
    assert request.amount.amount == Decimal(text)
    assert request.amount.amount.as_tuple().exponent == -2


@settings(max_examples=100)
@given(whole=st.integers(min_value=1, max_value=99_999_999))
def test_every_whole_json_integer_is_read_exactly(whole: int) -> None:
    body = f'{{"order_id": 1, "amount": {whole}}}'.encode()

    request = validate(PayRequest, decode_json_object(body))

    assert request.amount.amount == decimal_of(whole * 100)


ORDER_IDS = (1, 2, 3)
MISSING_ORDER_ID = 4


def pending_orders(totals: list[int]) -> InMemoryStore:
    """A store with one pending order per id of ORDER_IDS, of these totals in cents."""
    return store_with(
        *(
            pending_order(order_id=order_id, total=plain_text(total))
            for order_id, total in zip(ORDER_IDS, totals, strict=True)
        )
    )


@settings(max_examples=100)
@given(
    totals=st.lists(cents, min_size=len(ORDER_IDS), max_size=len(ORDER_IDS)),
    data=st.data(),
)
def test_an_order_is_paid_at_most_once_whatever_the_attempts(
    totals: list[int], data: st.DataObject
) -> None:
    store = pending_orders(totals)
    attempts = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from([*totals, 1, MAX_CENTS]) | cents,
                st.sampled_from([*ORDER_IDS, MISSING_ORDER_ID]),
            ),
            max_size=20,
        )
    )

    async def one_after_another() -> list[services.Reply]:
        return [
            await pay(order_id, Money(decimal_of(amount)), uow=InMemoryUnitOfWork(store))
            for amount, order_id in attempts
        ]

    successes = [r.outcome for r in asyncio.run(one_after_another())].count(Outcome.PAID)

    assert successes == len(store.payments)
    assert len(store.audit) == len(attempts)
    assert {p.order_id for p in store.payments.values()} <= set(ORDER_IDS)
    for order_id, total in zip(ORDER_IDS, totals, strict=True):
        order = store.orders[order_id]
        payments = [p for p in store.payments.values() if p.order_id == order_id]
        assert len(payments) <= 1
        exactly_paid = len(payments) == 1 and payments[0].amount.amount == decimal_of(total)
        assert (order.status == OrderStatus.PAID) == exactly_paid
        assert (order.paid_at is not None) == exactly_paid
        assert (order.status == OrderStatus.PAID) == ((totals[order_id - 1], order_id) in attempts)


KEYS = ("key-a", "key-b", "key-c")


@settings(max_examples=100)
@given(
    totals=st.lists(cents, min_size=len(ORDER_IDS), max_size=len(ORDER_IDS)),
    data=st.data(),
)
def test_a_key_gets_one_decision_and_its_answer_ever_after(
    totals: list[int], data: st.DataObject
) -> None:
    store = pending_orders(totals)
    attempts = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from([*totals, 1]),
                st.sampled_from([*ORDER_IDS, MISSING_ORDER_ID]),
                st.sampled_from(KEYS) | st.none(),
            ),
            max_size=20,
        )
    )
    first: dict[str, tuple[str, RecordedAnswer]] = {}

    async def one_after_another() -> int:
        paid = 0
        for amount, order_id, key in attempts:
            request = attempt(order_id, Money(decimal_of(amount)), key=key)
            uow = InMemoryUnitOfWork(store)
            if key is not None and key in first and first[key][0] != request.fingerprint:
                reused = await services.pay(
                    request, uow=uow, clock=FixedClock(), answer_for=plain_answer
                )
                assert reused.outcome is Outcome.IDEMPOTENCY_KEY_REUSED
                continue
            reply = await services.pay(
                request, uow=uow, clock=FixedClock(), answer_for=plain_answer
            )
            if key is not None and key in first:
                assert reply.replayed
                assert reply.payment is None
                assert reply.answer == first[key][1]
                continue
            assert not reply.replayed
            if key is not None:
                first[key] = (request.fingerprint, reply.answer)
            if reply.outcome is Outcome.PAID:
                paid += 1
        return paid

    paid = asyncio.run(one_after_another())

    assert paid == len(store.payments)
    assert len(store.audit) == len(attempts)
    assert set(store.idempotency) == {(CALLER, key) for key in first}
    for order_id in ORDER_IDS:
        assert len([p for p in store.payments.values() if p.order_id == order_id]) <= 1


@settings(max_examples=100)
@given(
    totals=st.lists(cents, min_size=len(ORDER_IDS), max_size=len(ORDER_IDS)),
    data=st.data(),
)
def test_attempts_made_all_at_once_pay_each_order_at_most_once_and_keep_one_answer_per_key(
    totals: list[int], data: st.DataObject
) -> None:
    store = pending_orders(totals)
    attempts = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from([*totals, 1]),
                st.sampled_from([*ORDER_IDS, MISSING_ORDER_ID]),
                st.sampled_from(KEYS) | st.none(),
            ),
            min_size=1,
            max_size=12,
        )
    )
    requests = [attempt(o, Money(decimal_of(amount)), key=key) for amount, o, key in attempts]
    waiting = list(requests)

    async def one(request: PaymentAttempt) -> tuple[PaymentAttempt, services.Reply | None]:
        """The attempt and its reply; None when its key was used for another request."""
        uow = InterleavedUnitOfWork(store)
        reply = await services.pay(request, uow=uow, clock=FixedClock(), answer_for=plain_answer)
        if reply.outcome is Outcome.IDEMPOTENCY_KEY_REUSED:
            return request, None
        return request, reply

    # Every attempt reads before any writes: all but the first to commit on an order or a
    # key find it changed at their commit, and decide again.
    results, unexpected = asyncio.run(all_at_once(len(requests), lambda: one(waiting.pop())))

    assert unexpected == []
    replies = [(request, reply) for request, reply in results if reply is not None]
    paid = [reply.payment for _, reply in replies if reply.outcome is Outcome.PAID]
    assert sorted(p.id or 0 for p in paid if p) == sorted(store.payments)
    assert len(store.audit) == len(requests)
    for order_id, total in zip(ORDER_IDS, totals, strict=True):
        payments = [p for p in store.payments.values() if p.order_id == order_id]
        assert len(payments) <= 1
        exactly_paid = len(payments) == 1 and payments[0].amount.amount == decimal_of(total)
        assert (store.orders[order_id].status == OrderStatus.PAID) == exactly_paid
    keys = {request.idempotency_key for request in requests} - {None}
    assert set(store.idempotency) == {(CALLER, key) for key in keys}
    for request, reply in results:
        if request.idempotency_key is None:
            assert reply is not None
            assert not reply.replayed
            continue
        kept = store.idempotency[(CALLER, request.idempotency_key)].record
        assert (reply is None) == (request.fingerprint != kept.fingerprint)
        assert reply is None or reply.answer == kept.answer
