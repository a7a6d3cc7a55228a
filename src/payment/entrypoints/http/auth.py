"""API keys (SPEC §4): ``Authorization: Bearer <key>`` on every endpoint but the probes and
the metrics, when keys are configured. The API's description and its pages (``docs.py``) hold no
data and need no key either: a reader opens them, then enters a key under Authorize.

The keys are held only as SHA-256 digests, and a presented key is compared with every one of
them in constant time. The caller is known by an identity made from the key's digest, never by
the key itself: that identity scopes idempotency keys and goes into the audit trail and logs.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from payment.entrypoints.http.docs import is_documentation
from payment.entrypoints.http.problems import UNAUTHORIZED

ANONYMOUS_CALLER = "anonymous"
"""The one caller, and idempotency scope, while API keys are off."""

OPEN_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
"""Probes and metrics answer without a key: orchestrators and scrapers hold none."""

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="payment-service"'}


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """The configured keys, as digests, each with the caller identity it stands for."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._known = tuple((_digest(key), f"key-{_digest(key).hex()[:12]}") for key in keys)
        if not self._known:
            raise ValueError("at least one API key is needed")

    def caller(self, presented: str) -> str | None:
        """The identity of the caller holding ``presented``, or None for an unknown key.
        Every known key is compared, so the time taken says nothing about which matched."""
        digest = _digest(presented)
        found = None
        for known, identity in self._known:
            if hmac.compare_digest(digest, known):
                found = identity
        return found


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            header: str = value.decode("latin-1")
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class ApiKeyMiddleware:
    """Refuses with 401 a request without a known key; otherwise names its caller in
    ``request.state.caller``. Lets everything through when ``keys`` is None."""

    def __init__(self, app: ASGIApp, keys: ApiKeys | None) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.keys is None
            or scope["path"] in OPEN_PATHS
            or is_documentation(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        caller = None if token is None else self.keys.caller(token)
        if caller is None:
            detail = (
                "A valid API key is needed: send it as 'Authorization: Bearer <key>'."
                if token is None
                else "The API key is not valid."
            )
            await UNAUTHORIZED.response(detail, headers=_CHALLENGE)(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)
