"""Webhooks: each event POSTed to a subscriber's URL, signed so the subscriber knows it came
from us and was not replayed much later.

The request is the CloudEvent in structured mode (``Content-Type:
application/cloudevents+json``), the body byte for byte as stored in the outbox, with
``Webhook-Id`` (the event id: the subscriber's deduplication key) and ``Payment-Signature:
t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`` (Stripe's scheme: the timestamp is
signed with the body, so an old request replayed later fails the subscriber's tolerance check).
A 2xx answer is a delivery; anything else, a timeout or a connection error is not, and the relay
tries again later. Redirects are not followed: a subscriber that moved is a configuration to fix,
not a place to send signed events to blindly.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable, MutableMapping
from importlib.metadata import version
from urllib.parse import urlsplit, urlunsplit

import httpx2

from payment.adapters.cloudevents import CONTENT_TYPE as CONTENT_TYPE
from payment.domain.delivery import DeliveryFailed, OutboxEvent

SIGNATURE_HEADER = "Payment-Signature"

TraceInjector = Callable[[MutableMapping[str, str]], None]
"""Adds the current trace context's headers (``traceparent`` ...) to a request's headers."""


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Payment-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def public_url(url: str, secret: str) -> str:
    """``url`` without what may be a credential (user info, query, fragment): safe in a log,
    a metric label or the outbox. When something was removed, a keyed digest of the whole URL
    is appended, so two subscribers that differ only there keep distinct names (the outbox
    records deliveries by name) without the name revealing the part removed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    plain = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    if parts.username is None and parts.password is None and not parts.query and not parts.fragment:
        return plain
    tag = hmac.new(secret.encode(), url.encode(), hashlib.sha256).hexdigest()[:12]
    return f"{plain}#{tag}"


def new_http_client() -> httpx2.AsyncClient:
    """The connection pool webhook deliveries share: no redirects, no proxy from the
    environment (subscribers are reached directly), HTTP/1.1 keep-alive."""
    return httpx2.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        limits=httpx2.Limits(max_connections=100, max_keepalive_connections=20),
    )


class SharedHttpClient:
    """One HTTP client for every subscriber, closed when the last destination using it closes."""

    def __init__(self, client: httpx2.AsyncClient | None = None) -> None:
        self._client = client if client is not None else new_http_client()
        self._users = 0

    def acquire(self) -> httpx2.AsyncClient:
        self._users += 1
        return self._client

    @property
    def is_closed(self) -> bool:
        return self._client.is_closed

    async def release(self) -> None:
        self._users -= 1
        if self._users <= 0:
            await self._client.aclose()


class WebhookDestination:
    """One subscriber URL."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout_seconds: float = 5.0,
        client: SharedHttpClient | None = None,
        now: Callable[[], float] = time.time,
        inject_trace: TraceInjector | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a webhook URL is http:// or https:// with a host")
        if not secret:
            raise ValueError("a webhook needs a signing secret")
        if timeout_seconds <= 0:
            raise ValueError("the webhook timeout is a positive number of seconds")
        self.name = f"webhook:{public_url(url, secret)}"
        self._url = url
        self._secret = secret
        self._timeout = timeout_seconds
        self._share = client if client is not None else SharedHttpClient()
        self._client = self._share.acquire()
        self._now = now
        self._inject_trace = inject_trace
        self._user_agent = f"payment-service/{version('payment-service')}"

    def __repr__(self) -> str:
        return f"WebhookDestination({self.name!r})"

    async def deliver(self, event: OutboxEvent) -> None:
        body = event.body.encode()
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Webhook-Id": event.event_id,
            "User-Agent": self._user_agent,
            SIGNATURE_HEADER: signature_header(self._secret, body, int(self._now())),
        }
        if self._inject_trace is not None:
            self._inject_trace(headers)
        try:
            # httpx's timeout bounds each phase; this bounds the whole delivery, so a subscriber
            # that trickles its answer out byte by byte cannot hold the relay.
            async with asyncio.timeout(self._timeout):
                response = await self._client.post(
                    self._url, content=body, headers=headers, timeout=self._timeout
                )
        except (TimeoutError, httpx2.TimeoutException):
            raise DeliveryFailed(f"no answer within {self._timeout:g} s") from None
        except httpx2.HTTPError as error:
            # The exception's text may quote the URL: only its kind is kept.
            raise DeliveryFailed(f"request failed ({type(error).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"answered {response.status_code}")

    async def close(self) -> None:
        await self._share.release()
