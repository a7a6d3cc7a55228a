"""Verify a payment-service webhook before trusting it. Copy this file into your service:
it needs nothing but the Python standard library (3.9 or later).

Every webhook request carries

    Payment-Signature: t=1767225600,v1=5257a869e7ec...8d8bd   (v1: 64 hex digits)

where ``t`` is when it was sent (unix seconds) and ``v1`` the hex HMAC-SHA256, keyed with the
shared secret (PAYMENT_WEBHOOK_SECRET), of ``f"{t}.{body}"``: the timestamp, a dot and the raw
request body, byte for byte as received. Check it on the raw body, before parsing the JSON:

    from verify_webhook import InvalidSignature, verify_signature

    try:
        verify_signature(SECRET, request.headers["Payment-Signature"], raw_body)
    except InvalidSignature:
        return 400
    event = json.loads(raw_body)          # then deduplicate by event["id"]

While a secret is being replaced, pass both the new and the old one (``[new, old]``); a header
may also carry several ``v1`` values: one match is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

__all__ = ["DEFAULT_TOLERANCE_SECONDS", "InvalidSignature", "verify_signature"]

DEFAULT_TOLERANCE_SECONDS = 300


class InvalidSignature(ValueError):
    """The request is not a genuine, recent webhook: refuse it."""


def verify_signature(
    secret: str | bytes | Iterable[str | bytes],
    header: str | None,
    body: bytes | str,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check ``header`` (the ``Payment-Signature`` value) against ``body`` (the raw request body)
    with ``secret`` (or any of several secrets). Returns the signed timestamp; raises
    ``InvalidSignature`` when the header is missing or malformed, no ``v1`` value matches, or the
    timestamp is more than ``tolerance_seconds`` away from ``now`` (default: the current time),
    which is what stops a captured request from being replayed later."""
    if not header:
        raise InvalidSignature("no Payment-Signature header")
    timestamp, signatures = _parse(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise InvalidSignature("the signature's timestamp is outside the tolerance")
    raw = body.encode("utf-8") if isinstance(body, str) else body
    signed = str(timestamp).encode("ascii") + b"." + raw
    matched = False
    for key in _secrets(secret):
        expected = hmac.new(key, signed, hashlib.sha256).hexdigest()
        for candidate in signatures:
            # Constant time, and no early exit: how long this takes says nothing about the key.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise InvalidSignature("no signature matches")
    return timestamp


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, separator, value = item.strip().partition("=")
        if not separator:
            raise InvalidSignature("the Payment-Signature header is malformed")
        if name == "t":
            if timestamp is not None or not value.isdigit():
                raise InvalidSignature("the Payment-Signature header is malformed")
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value.lower())
        # Other schemes (v0, a future v2) are ignored, as Stripe's clients do.
    if timestamp is None:
        raise InvalidSignature("the Payment-Signature header has no timestamp")
    if not signatures:
        raise InvalidSignature("the Payment-Signature header has no v1 signature")
    return timestamp, signatures


def _secrets(secret: str | bytes | Iterable[str | bytes]) -> list[bytes]:
    candidates = [secret] if isinstance(secret, (str, bytes)) else list(secret)
    keys = [s.encode("utf-8") if isinstance(s, str) else s for s in candidates]
    if not keys or not all(keys):
        raise ValueError("a webhook secret must not be empty")
    return keys
