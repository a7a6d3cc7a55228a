"""``X-Request-ID``: taken from the request when it is sane, made up otherwise, and returned
on every response, errors included."""

from __future__ import annotations

import re
import uuid

from fastapi import Request

REQUEST_ID_HEADER = "X-Request-ID"
_SANE = re.compile(r"[\x21-\x7e]{1,128}")


def request_id_from(value: str | None) -> str:
    """``value`` when it is 1 to 128 visible ASCII characters, else a new random id: a
    caller's id is kept for tracing, but never lets arbitrary bytes into logs."""
    if value is not None and _SANE.fullmatch(value):
        return value
    return uuid.uuid4().hex


def request_id_of(request: Request) -> str:
    request_id: str = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    return request_id
