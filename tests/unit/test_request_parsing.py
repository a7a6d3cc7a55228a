from __future__ import annotations

import json
import re
from decimal import Decimal, localcontext
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from payment.domain.model import Money
from payment.entrypoints.http.body import decode_json_object, validate
from payment.entrypoints.http.problems import MALFORMED_REQUEST, VALIDATION_ERROR, ProblemError
from payment.entrypoints.http.schemas import PayRequest


def parse(body: bytes | str) -> PayRequest:
    raw = body.encode() if isinstance(body, str) else body
    return validate(PayRequest, decode_json_object(raw))


def refusal(body: bytes | str) -> ProblemError:
    with pytest.raises(ProblemError) as refused:
        parse(body)
    return refused.value


def field_errors(body: bytes | str) -> dict[str, str]:
    problem = refusal(body)
    assert problem.kind == VALIDATION_ERROR
    assert problem.errors is not None
    errors: dict[str, str] = {}
    for error in problem.errors:
        assert error.header is None
        assert error.pointer is not None
        errors[error.pointer] = error.detail
    return errors


def test_reads_the_example_body_exactly() -> None:
    request = parse('{"order_id": 123, "amount": 199.99}')

    assert request.order_id == 123
    assert request.amount == Money(Decimal("199.99"))
    assert request.amount.amount.as_tuple() == Decimal("199.99").as_tuple()


def test_reads_a_decimal_string_amount_exactly() -> None:
    assert parse('{"order_id": 1, "amount": "199.99"}').amount.amount == Decimal("199.99")


def test_decodes_json_numbers_as_decimals_never_floats() -> None:
    members = decode_json_object(b'{"a": 0.1, "b": 1e2, "c": 7}')

    assert members == {"a": Decimal("0.1"), "b": Decimal("1E+2"), "c": 7}
    assert type(members["a"]) is Decimal
    assert type(members["c"]) is int


@pytest.mark.parametrize("exact", ["12345e-2", "1.2345e2", "1.2345E+2", "0.12345e3"])
def test_accepts_an_exponent_that_hides_no_extra_digit(exact: str) -> None:
    assert parse(f'{{"order_id": 1, "amount": {exact}}}').amount.amount == Decimal("123.45")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'{"order_id": 1, "amount": 1',
        b"{'order_id': 1}",
        b'{"order_id": 1, "amount": 1,}',
        b'{"order_id": 1, "amount": 1}\x00',
    ],
)
def test_refuses_a_body_that_is_not_json_as_malformed(body: bytes) -> None:
    problem = refusal(body)

    assert problem.kind == MALFORMED_REQUEST
    assert problem.detail == "The body is not valid JSON."


@pytest.mark.parametrize("body", ["[]", "[1, 2]", '"pay"', "199.99", "null", "true"])
def test_refuses_json_that_is_not_an_object_as_malformed(body: str) -> None:
    problem = refusal(body)

    assert problem.kind == MALFORMED_REQUEST
    assert problem.detail == "The body must be a JSON object."


def test_refuses_a_repeated_member_as_malformed() -> None:
    problem = refusal('{"order_id": 1, "amount": 5, "amount": 500}')

    assert problem.kind == MALFORMED_REQUEST
    assert "repeats the member 'amount'" in problem.detail


def test_refuses_a_repeated_member_in_a_nested_object_as_malformed() -> None:
    problem = refusal('{"order_id": 1, "amount": 5, "x": {"k": 1, "k": 2}}')

    assert problem.kind == MALFORMED_REQUEST


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_refuses_deeply_nested_json_as_malformed_without_crashing(opening: str) -> None:
    problem = refusal(opening * 100_000)

    assert problem.kind == MALFORMED_REQUEST


@pytest.mark.parametrize(
    ("amount", "detail"),
    [
        ("NaN", "amount must be a finite number"),
        ("Infinity", "amount must be a finite number"),
        ("-Infinity", "amount must be a finite number"),
        ("true", 'amount must be a JSON number or a decimal string such as "199.99"'),
        ("false", 'amount must be a JSON number or a decimal string such as "199.99"'),
        ("null", 'amount must be a JSON number or a decimal string such as "199.99"'),
        ("[199.99]", 'amount must be a JSON number or a decimal string such as "199.99"'),
        ('{"value": 199.99}', 'amount must be a JSON number or a decimal string such as "199.99"'),
        ("199.999", "amount must have at most two decimal places"),
        ("0.001", "amount must have at most two decimal places"),
        ("1.23456e2", "amount must have at most two decimal places"),
        ("12345e-3", "amount must have at most two decimal places"),
        ("1e-999999999", "amount must have at most two decimal places"),
        ("0", "amount must be greater than 0"),
        ("0.00", "amount must be greater than 0"),
        ("-0.0", "amount must be greater than 0"),
        ("-5", "amount must be greater than 0"),
        ("-199.99", "amount must be greater than 0"),
        ("100000000", "amount must be at most 99999999.99"),
        ("99999999.991", "amount must be at most 99999999.99"),
        ("1e999999999", "amount must be at most 99999999.99"),
        ("9" * 5000, "amount must be at most 99999999.99"),
        ('"1e2"', 'amount must be a decimal string such as "199.99"'),
        ('" 5"', 'amount must be a decimal string such as "199.99"'),
        ('"5 "', 'amount must be a decimal string such as "199.99"'),
        ('"+5"', 'amount must be a decimal string such as "199.99"'),
        ('"-5"', 'amount must be a decimal string such as "199.99"'),
        ('"5."', 'amount must be a decimal string such as "199.99"'),
        ('".5"', 'amount must be a decimal string such as "199.99"'),
        ('"1,000.00"', 'amount must be a decimal string such as "199.99"'),
        ('"NaN"', 'amount must be a decimal string such as "199.99"'),
        ('"Infinity"', 'amount must be a decimal string such as "199.99"'),
        ('""', 'amount must be a decimal string such as "199.99"'),
        ('"\\u0661"', 'amount must be a decimal string such as "199.99"'),
        ('"199.999"', "amount must have at most two decimal places"),
        ('"0"', "amount must be greater than 0"),
        ('"100000000.00"', "amount must be at most 99999999.99"),
    ],
)
def test_refuses_an_invalid_amount_with_a_clear_detail(amount: str, detail: str) -> None:
    assert field_errors(f'{{"order_id": 1, "amount": {amount}}}') == {"/amount": detail}


@pytest.mark.parametrize(
    "order_id",
    [
        "0",
        "-1",
        "2147483648",
        "9" * 5000,
        "1.5",
        "1e-1",
        "2147483648.0",
        "1e999999999",
        '"1"',
        "true",
        "null",
        "[1]",
    ],
)
def test_refuses_an_order_id_that_is_not_an_integer_in_range(order_id: str) -> None:
    errors = field_errors(f'{{"order_id": {order_id}, "amount": 1}}')

    assert list(errors) == ["/order_id"]
    assert errors["/order_id"]


@pytest.mark.parametrize("order_id", ["7.0", "7.00", "0.7e1", "70e-1"])
def test_an_order_id_with_a_zero_fraction_is_the_integer_it_is(order_id: str) -> None:
    # JSON Schema counts 7.0 as an integer; the document promises an integer, so it is one.
    request = validate(
        PayRequest, decode_json_object(f'{{"order_id": {order_id}, "amount": 1}}'.encode())
    )

    assert request.order_id == 7
    assert type(request.order_id) is int


@pytest.mark.parametrize(
    ("order_id", "detail"),
    [
        ("0", "Input should be greater than or equal to 1"),
        ("2147483648", "Input should be less than or equal to 2147483647"),
        ("true", "Input should be a valid integer"),
        ('"1"', "Input should be a valid integer"),
    ],
)
def test_says_why_an_order_id_is_refused(order_id: str, detail: str) -> None:
    assert field_errors(f'{{"order_id": {order_id}, "amount": 1}}') == {"/order_id": detail}


def test_accepts_the_largest_order_id() -> None:
    assert parse('{"order_id": 2147483647, "amount": 1}').order_id == 2_147_483_647


def test_refuses_an_unknown_member_at_its_pointer() -> None:
    errors = field_errors('{"order_id": 1, "amount": 1, "currency": "EUR"}')

    assert errors == {"/currency": "Extra inputs are not permitted"}


def test_escapes_an_unknown_member_name_in_its_pointer() -> None:
    errors = field_errors('{"order_id": 1, "amount": 1, "a/b~c": 0}')

    assert list(errors) == ["/a~1b~0c"]


def test_lists_every_missing_member() -> None:
    assert field_errors("{}") == {"/order_id": "Field required", "/amount": "Field required"}


def test_lists_every_member_at_fault_at_once() -> None:
    errors = field_errors('{"order_id": 0, "amount": 1.001, "extra": 1}')

    assert set(errors) == {"/order_id", "/amount", "/extra"}


def test_a_validation_problem_never_echoes_the_input() -> None:
    problem = refusal('{"order_id": "s3cr3t-id", "amount": "s3cr3t-amount"}')

    assert problem.errors is not None
    assert "s3cr3t" not in problem.detail
    assert all("s3cr3t" not in error.detail for error in problem.errors)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"\xef\xbb\xbf{}", "The body must be UTF-8 without a byte-order mark."),
        (b"\xff\xfe{\x00}\x00", "The body must be UTF-8 without a byte-order mark."),
        (b"\xfe\xff\x00{\x00}", "The body must be UTF-8 without a byte-order mark."),
        (b"\xff\xfe\x00\x00{\x00\x00\x00", "The body must be UTF-8 without a byte-order mark."),
        ("{}".encode("utf-16-le"), "The body must be UTF-8, not UTF-16 or UTF-32."),
        ("{}".encode("utf-32-be"), "The body must be UTF-8, not UTF-16 or UTF-32."),
        (b'{"a": "\xe9"}', "The body is not valid UTF-8."),
        (b'{"a": "\xed\xa0\x80"}', "The body is not valid UTF-8."),
    ],
)
def test_reads_only_utf_8_without_a_byte_order_mark(body: bytes, detail: str) -> None:
    problem = refusal(body)

    assert problem.kind == MALFORMED_REQUEST
    assert problem.detail == detail


HUGE_EXPONENT = "99999999999999999999"
"""Beyond what a Decimal's exponent holds (about 10**18): Decimal() raises on it."""


@pytest.mark.parametrize(
    ("amount", "detail"),
    [
        (f"1e{HUGE_EXPONENT}", "amount must be at most 99999999.99"),
        (f"-2.5E+{HUGE_EXPONENT}", "amount must be at most 99999999.99"),
        (f"1e-{HUGE_EXPONENT}", "amount must have at most two decimal places"),
        (f"0e{HUGE_EXPONENT}", "amount must be greater than 0"),
        (f"0.0E-{HUGE_EXPONENT}", "amount must be greater than 0"),
        ("1e-999999999999999999", "amount must have at most two decimal places"),
        ("1e999999999999999999", "amount must be at most 99999999.99"),
    ],
)
def test_an_amount_whose_exponent_no_decimal_holds_is_refused_as_its_value_is(
    amount: str, detail: str
) -> None:
    assert field_errors(f'{{"order_id": 1, "amount": {amount}}}') == {"/amount": detail}


@pytest.mark.parametrize(
    "order_id", [f"1e{HUGE_EXPONENT}", f"7e-{HUGE_EXPONENT}", f"0e{HUGE_EXPONENT}"]
)
def test_an_order_id_whose_exponent_no_decimal_holds_is_refused(order_id: str) -> None:
    errors = field_errors(f'{{"order_id": {order_id}, "amount": 1}}')

    assert list(errors) == ["/order_id"]


@pytest.mark.parametrize(
    ("amount", "detail"),
    [
        ('"25.000"', "amount must have at most two decimal places"),
        ('"0.000"', "amount must have at most two decimal places"),
        ('"000000001.00"', "amount must have at most 8 digits before the decimal point"),
        ('"000000000"', "amount must be greater than 0"),
        ('"00.00"', "amount must be greater than 0"),
        ('"123456789"', "amount must be at most 99999999.99"),
        ('"5.0\\n"', 'amount must be a decimal string such as "199.99"'),
    ],
)
def test_refuses_the_amount_strings_the_document_refuses_saying_why(
    amount: str, detail: str
) -> None:
    assert field_errors(f'{{"order_id": 1, "amount": {amount}}}') == {"/amount": detail}


@pytest.mark.parametrize("amount", ["025.00", "00000001.5", "99999999.99", "0.01", "7", "7.1"])
def test_accepts_the_amount_strings_the_document_accepts(amount: str) -> None:
    assert parse(f'{{"order_id": 1, "amount": "{amount}"}}').amount.amount == Decimal(amount)


AMOUNT_DOCUMENT: dict[str, Any] = PayRequest.model_json_schema()["properties"]["amount"]
"""The amount as /openapi.json states it: a number branch and a string branch."""
[NUMBER_BRANCH] = [branch for branch in AMOUNT_DOCUMENT["anyOf"] if branch["type"] == "number"]
[STRING_BRANCH] = [branch for branch in AMOUNT_DOCUMENT["anyOf"] if branch["type"] == "string"]


def amount_accepted(amount: str) -> bool:
    """``amount`` (JSON text) is read as the amount of an otherwise valid payment, or refused
    for the amount alone."""
    body = f'{{"order_id": 1, "amount": {amount}}}'
    try:
        parse(body)
    except ProblemError:
        assert list(field_errors(body)) == ["/amount"]
        return False
    return True


AMOUNT_TEXTS = st.one_of(
    st.from_regex(STRING_BRANCH["pattern"]),
    st.from_regex(r"0{0,3}[0-9]{0,10}(\.[0-9]{0,4})?", fullmatch=True),
    st.text(alphabet="0123456789.", max_size=14),
    st.text(max_size=12),
)


@given(AMOUNT_TEXTS)
@example("025.00")
@example("25.000")
@example("000000025.00")
@example("00000000")
@example("5\n")
def test_an_amount_string_is_accepted_exactly_when_the_document_pattern_matches_it(
    text: str,
) -> None:
    documented = re.fullmatch(STRING_BRANCH["pattern"], text) is not None

    assert amount_accepted(json.dumps(text)) == documented
    # A JSON Schema validator reads the pattern as Python does.
    assert jsonschema_rs.validator_for(STRING_BRANCH).is_valid(text) == documented


def documented_number(number: Decimal) -> bool:
    """What the document's number branch says of ``number``, in exact arithmetic."""
    minimum = Decimal(str(NUMBER_BRANCH["exclusiveMinimum"]))
    maximum = Decimal(str(NUMBER_BRANCH["maximum"]))
    step = Decimal(str(NUMBER_BRANCH["multipleOf"]))
    with localcontext(prec=100):
        return minimum < number <= maximum and number % step == 0


AMOUNT_NUMBERS = st.builds(
    lambda sign, digits, exponent: Decimal((sign, tuple(digits), exponent)),
    st.integers(0, 1),
    st.lists(st.integers(0, 9), min_size=1, max_size=14),
    st.integers(-12, 12),
)


@given(AMOUNT_NUMBERS)
@example(Decimal("99999999.99"))
@example(Decimal("99999999.990"))
@example(Decimal("100000000"))
@example(Decimal("0.01"))
@example(Decimal("-0"))
@example(Decimal("2.5E+1"))
def test_an_amount_number_is_accepted_exactly_when_the_document_allows_it(
    number: Decimal,
) -> None:
    assert amount_accepted(str(number)) == documented_number(number)
