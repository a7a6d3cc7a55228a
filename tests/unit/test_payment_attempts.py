"""What a payment attempt is: its idempotency key's rules and its fingerprint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payment.domain.attempts import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    AuditRecord,
    Outcome,
    PaymentAttempt,
    idempotency_key,
)
from payment.domain.errors import InvalidIdempotencyKey
from payment.domain.model import Money
from tests.support.attempts import attempt

VISIBLE_ASCII = "".join(chr(code) for code in range(0x21, 0x7F))
visible_ascii = st.sampled_from(VISIBLE_ASCII)
valid_keys = st.text(visible_ascii, min_size=1, max_size=MAX_IDEMPOTENCY_KEY_LENGTH)
invisible_or_not_ascii = st.characters(exclude_categories=["Cs"], exclude_characters=VISIBLE_ASCII)
NOW_PLUS_TWO = datetime(2026, 11, 26, 12, 15, tzinfo=timezone(timedelta(hours=2)))


def test_the_visible_ascii_range_is_what_the_spec_says() -> None:
    assert VISIBLE_ASCII[0] == "!"
    assert VISIBLE_ASCII[-1] == "~"
    assert len(VISIBLE_ASCII) == 94


@given(key=valid_keys)
def test_accepts_every_key_of_1_to_255_visible_ascii_characters(key: str) -> None:
    assert idempotency_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "~",
        "x" * MAX_IDEMPOTENCY_KEY_LENGTH,
        "550e8400-e29b-41d4-a716-446655440000",
        VISIBLE_ASCII,
    ],
)
def test_accepts_keys_at_the_edges(key: str) -> None:
    assert idempotency_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * (MAX_IDEMPOTENCY_KEY_LENGTH + 1), "x" * 10_000])
def test_refuses_a_key_that_is_empty_or_longer_than_255_characters(key: str) -> None:
    with pytest.raises(InvalidIdempotencyKey, match="1 to 255 characters"):
        idempotency_key(key)


@pytest.mark.parametrize(
    "key",
    [
        " ",
        "a b",
        " key",
        "key ",
        "tab\there",
        "new\nline",
        "nul\x00",
        "del\x7f",
        "caf\u00e9",
        "\u00a0nbsp",
        "\u0661",
        "emoji\U0001f4b8",
    ],
)
def test_refuses_a_key_with_a_space_a_control_character_or_non_ascii(key: str) -> None:
    with pytest.raises(InvalidIdempotencyKey, match="visible ASCII"):
        idempotency_key(key)


@given(
    before=st.text(visible_ascii, max_size=100),
    bad=invisible_or_not_ascii,
    after=st.text(visible_ascii, max_size=100),
)
def test_refuses_every_key_with_one_character_outside_visible_ascii(
    before: str, bad: str, after: str
) -> None:
    with pytest.raises(InvalidIdempotencyKey):
        idempotency_key(before + bad + after)


@given(key=st.text(visible_ascii, min_size=MAX_IDEMPOTENCY_KEY_LENGTH + 1, max_size=400))
def test_refuses_every_visible_key_longer_than_255(key: str) -> None:
    with pytest.raises(InvalidIdempotencyKey):
        idempotency_key(key)


def test_an_attempt_refuses_an_invalid_key() -> None:
    with pytest.raises(InvalidIdempotencyKey):
        attempt(1, "10.00", key="a b")


def test_an_attempt_without_a_key_is_valid() -> None:
    assert attempt(1, "10.00").idempotency_key is None


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (Decimal("10.5"), Decimal("10.50")),
        (Decimal("10"), Decimal("10.00")),
        (Decimal("1E+1"), Decimal("10.0")),
        (Decimal("0.1"), Decimal("0.10")),
    ],
)
def test_the_fingerprint_is_the_same_for_equal_amounts_however_written(
    one: Decimal, other: Decimal
) -> None:
    assert one.as_tuple() != other.as_tuple()

    assert attempt(7, one).fingerprint == attempt(7, other).fingerprint


def test_the_fingerprint_ignores_who_asked_under_which_request_id_and_key() -> None:
    first = attempt(7, "10.00", key="k1", caller="shop", request_id="r1")
    again = attempt(7, "10.00", key="k2", caller="gateway", request_id="r2")

    assert first.fingerprint == again.fingerprint


def test_the_fingerprint_differs_for_another_order() -> None:
    assert attempt(7, "10.00").fingerprint != attempt(8, "10.00").fingerprint


def test_the_fingerprint_differs_for_another_amount() -> None:
    assert attempt(7, "10.00").fingerprint != attempt(7, "10.01").fingerprint


def test_the_fingerprint_tells_order_and_amount_apart() -> None:
    """No two requests run together into one text: order 11 of 1.00 is not order 1 of 11.00."""
    assert attempt(11, "1.00").fingerprint != attempt(1, "11.00").fingerprint


@given(
    order_ids=st.tuples(st.integers(1, 2_147_483_647), st.integers(1, 2_147_483_647)),
    amounts=st.tuples(st.integers(1, 9_999_999_999), st.integers(1, 9_999_999_999)),
)
def test_the_fingerprint_is_equal_exactly_when_order_and_amount_are(
    order_ids: tuple[int, int], amounts: tuple[int, int]
) -> None:
    one, other = (
        PaymentAttempt(
            order_id=order_id,
            amount=Money(Decimal(cents) / 100),
            caller="caller",
            request_id="request",
        )
        for order_id, cents in zip(order_ids, amounts, strict=True)
    )

    same_request = order_ids[0] == order_ids[1] and amounts[0] == amounts[1]
    assert (one.fingerprint == other.fingerprint) == same_request


def test_an_audit_record_keeps_the_attempt_as_it_was_made() -> None:
    made = attempt(7, "10.5", key="k1", caller="shop", request_id="r1")

    record = AuditRecord.of(made, Outcome.AMOUNT_MISMATCH, at=NOW_PLUS_TWO, payment_id=None)

    assert record.request_id == "r1"
    assert record.caller == "shop"
    assert record.order_id == 7
    assert record.claimed_amount == Money(Decimal("10.50"))
    assert record.idempotency_key == "k1"
    assert record.outcome is Outcome.AMOUNT_MISMATCH
    assert record.at == datetime(2026, 11, 26, 10, 15, tzinfo=UTC)
    assert record.at.tzinfo is UTC
