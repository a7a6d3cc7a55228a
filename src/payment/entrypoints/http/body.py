"""Reading a request body: sent as JSON, bounded in size, in UTF-8, and JSON numbers read as
exact decimals."""

from __future__ import annotations

import codecs
import json
import re
from decimal import Decimal
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError
from starlette.requests import ClientDisconnect

from payment.domain.errors import InvalidAmount
from payment.domain.model import MAX_AMOUNT, Money, payment_amount
from payment.entrypoints.http.problems import (
    CLIENT_CLOSED_REQUEST,
    MALFORMED_REQUEST,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    VALIDATION_ERROR,
    FieldError,
    ProblemError,
    pointer,
)

MAX_BODY_BYTES = 64 * 1024
JSON_MEDIA_TYPE = "application/json"
_LONGEST_PLAIN_INT = 32  # longer JSON integers stay Decimals: int() refuses over 4300 digits
_FARTHEST_EXPONENT = 999_999_999
"""Where an exponent beyond what Decimal holds (about 10**18) is brought back to: as far out of
every range as the one written, so validation refuses it with the same words."""
_DECIMAL_TEXT = re.compile(r"[0-9]+(\.[0-9]+)?")
_BYTE_ORDER_MARKS = (codecs.BOM_UTF8, codecs.BOM_UTF16_BE, codecs.BOM_UTF16_LE)
"""UTF-16 marks cover UTF-32's: FF FE 00 00 starts with FF FE."""

AMOUNT_PATTERN = r"^(?=[0-9.]*[1-9])[0-9]{1,8}(\.[0-9]{1,2})?$"
"""The decimal strings that are an amount, as /openapi.json states it, and as the service reads
them: greater than 0, at most 8 digits before the point and 2 after. Python and ECMA-262 read
this pattern alike."""
_AMOUNT_TEXT = re.compile(AMOUNT_PATTERN)
ModelT = TypeVar("ModelT", bound=BaseModel)


def is_json_media_type(content_type: str) -> bool:
    """``content_type`` is ``application/json``, in any case, with no parameter but
    ``charset=utf-8`` (RFC 9110 §8.3: empty parameters and a quoted value are allowed)."""
    media_type, *parameters = content_type.split(";")
    if media_type.strip(" \t").lower() != JSON_MEDIA_TYPE:
        return False
    for parameter in parameters:
        name, equals, value = parameter.strip(" \t").partition("=")
        if not name and not equals:
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name.lower() != "charset" or value.lower() != "utf-8":
            return False
    return True


def require_json(request: Request) -> None:
    """A 415 problem unless the request says, once, that its body is ``application/json``:
    a form or a ``text/plain`` body, which a page on another site can send without asking,
    is never read."""
    sent = request.headers.getlist("content-type")
    if len(sent) != 1 or not is_json_media_type(sent[0]):
        raise ProblemError(
            UNSUPPORTED_MEDIA_TYPE, "The body must be sent as Content-Type: application/json."
        )


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``limit`` bytes:
    by its Content-Length, or while it streams in (chunked bodies). A client that leaves
    before sending it all is a 499 problem, which nobody reads but the access line."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ProblemError(PAYLOAD_TOO_LARGE, f"The body exceeds {limit} bytes.")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            # Not held while the next chunk is awaited: a slow client's body is kept once.
            del chunk
            if len(body) > limit:
                raise ProblemError(PAYLOAD_TOO_LARGE, f"The body exceeds {limit} bytes.")
    except ClientDisconnect:
        raise ProblemError(
            CLIENT_CLOSED_REQUEST, "The client closed the connection before the body ended."
        ) from None
    return bytes(body)


def _integer(text: str) -> int | Decimal:
    return int(text) if len(text) <= _LONGEST_PLAIN_INT else _number(text)


def _number(text: str) -> Decimal:
    """A JSON number, exactly. One whose exponent Decimal cannot hold (``1e99999999999999999999``)
    comes back with the farthest exponent it can, on the same side: still out of every range."""
    try:
        return Decimal(text)
    except ArithmeticError:  # decimal.InvalidOperation: the exponent is beyond 10**18
        mantissa, _, exponent = text.lower().partition("e")
        if not Decimal(mantissa):
            return Decimal(mantissa)  # zero, whatever its exponent
        side = "-" if exponent.startswith("-") else "+"
        return Decimal(f"{mantissa}E{side}{_FARTHEST_EXPONENT}")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for key, value in pairs:
        if key in members:
            raise ProblemError(MALFORMED_REQUEST, f"The JSON object repeats the member {key!r}.")
        members[key] = value
    return members


def decode_json_object(body: bytes) -> dict[str, Any]:
    """The body, JSON in UTF-8 (RFC 8259 §8.1: no byte-order mark), as a JSON object whose
    numbers are exact: ``Decimal`` for any number with a fraction or an exponent (never a
    binary float), ``int`` for plain integers.

    ``NaN`` and ``Infinity`` decode to the Decimals of that name, for validation to refuse.
    """
    if body.startswith(_BYTE_ORDER_MARKS):
        raise ProblemError(MALFORMED_REQUEST, "The body must be UTF-8 without a byte-order mark.")
    if b"\0" in body[:4]:  # JSON in UTF-8 holds no NUL: UTF-16 or UTF-32 text does
        raise ProblemError(MALFORMED_REQUEST, "The body must be UTF-8, not UTF-16 or UTF-32.")
    try:
        # Decoded here, strictly: given bytes, json.loads would guess UTF-16 and UTF-32 too.
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProblemError(MALFORMED_REQUEST, "The body is not valid UTF-8.") from None
    try:
        value = json.loads(
            text,
            parse_float=_number,
            parse_int=_integer,
            parse_constant=Decimal,
            object_pairs_hook=_unique_members,
        )
    except (ValueError, RecursionError, ArithmeticError):
        raise ProblemError(MALFORMED_REQUEST, "The body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise ProblemError(MALFORMED_REQUEST, "The body must be a JSON object.")
    return value


_LARGEST_WHOLE_EXPONENT = 18


def whole_number(value: object) -> object:
    """A JSON number with a zero fraction (``47.0``, ``4.7e1``) as the integer it is, as JSON
    Schema counts it; anything else unchanged, for validation to judge. Giant exponents are
    left alone rather than expanded."""
    if (
        isinstance(value, Decimal)
        and value.is_finite()
        and value.adjusted() <= _LARGEST_WHOLE_EXPONENT
        and value == value.to_integral_value()
    ):
        return int(value)
    return value


def exact_amount(value: object) -> Money:
    """A payment amount from a JSON number (already a Decimal or int) or a decimal string."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise PydanticCustomError(
            "amount_type", 'amount must be a JSON number or a decimal string such as "199.99"'
        )
    if isinstance(value, str):
        if not _AMOUNT_TEXT.fullmatch(value):
            raise _refused_amount_text(value)
        value = Decimal(value)
    try:
        return payment_amount(Decimal(value))
    except InvalidAmount as error:
        raise PydanticCustomError("amount", "{reason}", {"reason": str(error)}) from None


def _refused_amount_text(text: str) -> PydanticCustomError:
    """Why ``text``, which AMOUNT_PATTERN refuses, is not an amount, in the words of the rule
    it breaks."""
    if not _DECIMAL_TEXT.fullmatch(text):
        return PydanticCustomError(
            "amount_format", 'amount must be a decimal string such as "199.99"'
        )
    whole, _, fraction = text.partition(".")
    if len(fraction) > 2:
        reason = "amount must have at most two decimal places"
    elif not whole.strip("0") and not fraction.strip("0"):
        reason = "amount must be greater than 0"
    elif Decimal(text) > MAX_AMOUNT:
        reason = f"amount must be at most {MAX_AMOUNT}"
    else:  # leading zeros: "000000001.00"
        reason = "amount must have at most 8 digits before the decimal point"
    return PydanticCustomError("amount", "{reason}", {"reason": reason})


def validate(model: type[ModelT], members: dict[str, Any]) -> ModelT:
    """``members`` as ``model``, or a 422 problem listing every member at fault."""
    try:
        return model.model_validate(members)
    except ValidationError as error:
        errors = [
            FieldError(pointer=pointer(e["loc"]), detail=e["msg"])
            for e in error.errors(include_url=False, include_input=False)
        ]
        raise ProblemError(VALIDATION_ERROR, "The request is invalid.", errors=errors) from None
