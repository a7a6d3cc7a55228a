from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payment.domain.errors import InvalidAmount
from payment.domain.model import MAX_AMOUNT, Money, payment_amount


def test_keeps_an_exact_decimal_amount() -> None:
    assert Money(Decimal("199.99")).amount == Decimal("199.99")


@pytest.mark.parametrize(
    ("given_amount", "expected_text"),
    [("5", "5.00"), ("5.5", "5.50"), ("5.500", "5.50"), ("12345E-2", "123.45"), ("1E+2", "100.00")],
)
def test_normalises_the_scale_to_two_decimal_places(given_amount: str, expected_text: str) -> None:
    money = Money(Decimal(given_amount))

    assert str(money) == expected_text
    assert money.amount.as_tuple().exponent == -2


def test_equal_amounts_of_different_scale_are_equal_money() -> None:
    assert Money(Decimal("10")) == Money(Decimal("10.00"))


def test_reads_money_from_its_decimal_text() -> None:
    assert Money.of("0.01").amount == Decimal("0.01")


@pytest.mark.parametrize("not_a_decimal", [199.99, 199, True, "199.99", None])
def test_refuses_anything_but_a_decimal(not_a_decimal: object) -> None:
    with pytest.raises(InvalidAmount, match="must be a Decimal"):
        Money(not_a_decimal)  # type: ignore[arg-type]


@pytest.mark.parametrize("special", ["NaN", "-NaN", "sNaN", "Infinity", "-Infinity"])
def test_refuses_nan_and_infinity(special: str) -> None:
    with pytest.raises(InvalidAmount, match="finite"):
        Money(Decimal(special))


@pytest.mark.parametrize("too_precise", ["0.001", "199.999", "1.0000000001", "-0.005"])
def test_refuses_an_amount_with_more_than_two_decimal_places(too_precise: str) -> None:
    with pytest.raises(InvalidAmount, match="two decimal places"):
        Money(Decimal(too_precise))


def test_accepts_trailing_zeros_beyond_two_decimal_places() -> None:
    assert Money(Decimal("1.230000")).amount == Decimal("1.23")


@pytest.mark.parametrize("tiny", ["1E-999999999", "-1E-999999999", "1E-1000000"])
def test_refuses_a_tiny_amount_with_a_giant_negative_exponent(tiny: str) -> None:
    with pytest.raises(InvalidAmount, match="two decimal places"):
        Money(Decimal(tiny))


@pytest.mark.parametrize("giant", ["1E+999999999", "-1E+999999999", "9.99E+999999", "0E+999999999"])
def test_refuses_a_giant_exponent_without_hanging(giant: str) -> None:
    with pytest.raises(InvalidAmount, match=r"at most 99999999\.99"):
        Money(Decimal(giant))


def test_refuses_an_integer_with_thousands_of_digits() -> None:
    with pytest.raises(InvalidAmount, match=r"at most 99999999\.99"):
        Money(Decimal("9" * 5000))


def test_accepts_the_largest_amount_the_store_holds() -> None:
    assert Money(MAX_AMOUNT).amount == Decimal("99999999.99")


@pytest.mark.parametrize("too_large", ["100000000.00", "99999999.991", "100000000", "-100000000"])
def test_refuses_an_amount_above_99999999_99(too_large: str) -> None:
    with pytest.raises(InvalidAmount):
        Money(Decimal(too_large))


def test_payment_amount_accepts_one_cent() -> None:
    assert payment_amount(Decimal("0.01")) == Money(Decimal("0.01"))


@pytest.mark.parametrize("not_positive", ["0", "0.00", "-0", "-0.01", "-199.99"])
def test_payment_amount_refuses_zero_and_negative_amounts(not_positive: str) -> None:
    with pytest.raises(InvalidAmount, match="greater than 0"):
        payment_amount(Decimal(not_positive))


@settings(max_examples=100)
@given(cents=st.integers(min_value=-9_999_999_999, max_value=9_999_999_999))
def test_every_whole_number_of_cents_in_range_is_money(cents: int) -> None:
    amount = Decimal(cents).scaleb(-2)

    money = Money(amount)

    assert money.amount == amount
    assert money.amount.as_tuple().exponent == -2


@settings(max_examples=100)
@given(
    thousandths=st.integers(min_value=-99_999_999_990, max_value=99_999_999_990).filter(
        lambda n: n % 10 != 0
    )
)
def test_every_amount_with_a_third_significant_decimal_is_refused(thousandths: int) -> None:
    with pytest.raises(InvalidAmount, match="two decimal places"):
        Money(Decimal(thousandths).scaleb(-3))


@settings(max_examples=100)
@given(
    amount=st.decimals(allow_nan=True, allow_infinity=True)
    | st.builds(
        Decimal,
        st.tuples(
            st.integers(0, 1),
            st.lists(st.integers(0, 9), min_size=1, max_size=40).map(tuple),
            st.integers(-999_999_999, 999_999_999),
        ),
    )
)
def test_any_decimal_is_either_money_or_an_invalid_amount(amount: Decimal) -> None:
    try:
        money = Money(amount)
    except InvalidAmount:
        return
    assert money.amount == amount
    assert abs(money.amount) <= MAX_AMOUNT
