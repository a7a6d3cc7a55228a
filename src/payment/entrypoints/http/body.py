"""Reading a request body: bounded in size, and JSON numbers read as exact decimals."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from payment.domain.errors import InvalidAmount
from payment.domain.model import Money, payment_amount
from payment.entrypoints.http.problems import (
    MALFORMED_REQUEST,
    PAYLOAD_TOO_LARGE,
    VALIDATION_ERROR,
    FieldError,
    ProblemError,
    pointer,
)

MAX_BODY_BYTES = 64 * 1024
_LONGEST_PLAIN_INT = 32  # longer JSON integers stay Decimals: int() refuses over 4300 digits
_DECIMAL_TEXT = re.compile(r"[0-9]+(\.[0-9]+)?")

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``limit`` bytes:
    by its Content-Length, or while it streams in (chunked bodies)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ProblemError(PAYLOAD_TOO_LARGE, f"The body exceeds {limit} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ProblemError(PAYLOAD_TOO_LARGE, f"The body exceeds {limit} bytes.")
    return bytes(body)


def _integer(text: str) -> int | Decimal:
    return int(text) if len(text) <= _LONGEST_PLAIN_INT else Decimal(text)


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for key, value in pairs:
        if key in members:
            raise ProblemError(MALFORMED_REQUEST, f"The JSON object repeats the member {key!r}.")
        members[key] = value
    return members


def decode_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object whose numbers are exact: ``Decimal`` for any number with a
    fraction or an exponent (never a binary float), ``int`` for plain integers.

    ``NaN`` and ``Infinity`` decode to the Decimals of that name, for validation to refuse.
    """
    try:
        value = json.loads(
            body,
            parse_float=Decimal,
            parse_int=_integer,
            parse_constant=Decimal,
            object_pairs_hook=_unique_members,
        )
    except (ValueError, RecursionError):
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
        if not _DECIMAL_TEXT.fullmatch(value):
            raise PydanticCustomError(
                "amount_format", 'amount must be a decimal string such as "199.99"'
            )
        value = Decimal(value)
    try:
        return payment_amount(Decimal(value))
    except InvalidAmount as error:
        raise PydanticCustomError("amount", "{reason}", {"reason": str(error)}) from None


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
