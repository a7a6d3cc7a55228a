"""``X-Request-ID``: taken from the request when it is sane, made up otherwise, and returned
on every response, errors included."""

from __future__ import annotations

import re
import uuid

from fastapi import Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER_KEY = REQUEST_ID_HEADER.lower().encode()
_SANE = re.compile(r"[\x21-\x7e]{1,128}")


def request_id_from(value: str | None) -> str:
    """``value`` when it is 1 to 128 visible ASCII characters, else a new random id: a
    caller's id is kept for tracing, but never lets arbitrary bytes into logs."""
    if value is not None and _SANE.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Puts the request id in ``request.state.request_id`` and in the response's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next(
            (
                value.decode("latin-1")
                for name, value in scope["headers"]
                if name == b"x-request-id"
            ),
            None,
        )
        request_id = request_id_from(given)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id_of(request: Request) -> str:
    request_id: str = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    return request_id
