"""Webhook deliveries against a real HTTP subscriber on loopback that answers, fails, hangs,
and goes away."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from datetime import UTC, datetime

import pytest

from payment.adapters.destinations.webhook import SharedHttpClient, WebhookDestination
from payment.domain.delivery import DeliveryFailed, OutboxEvent
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.webhook_verifier import InvalidSignature, verify_signature

pytestmark = pytest.mark.anyio

SECRET = "whsec-integration-0123456789"
TIMEOUT_SECONDS = 0.5


def an_event(number: int = 1) -> OutboxEvent:
    event_id = f"00000000-0000-4000-8000-{number:012d}"
    body = json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "/payment-service",
            "type": "payment.succeeded",
            "subject": str(number),
            "data": {"order_id": number, "amount": "199.99", "note": "déjà payé"},
        },
        ensure_ascii=False,
    )
    return OutboxEvent(
        position=number,
        event_id=event_id,
        type="payment.succeeded",
        subject=str(number),
        body=body,
        created_at=datetime.now(UTC),
    )


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver.running() as receiver:
        yield receiver


@pytest.fixture
async def destination(receiver: WebhookReceiver) -> AsyncIterator[WebhookDestination]:
    destination = WebhookDestination(receiver.url, SECRET, timeout_seconds=TIMEOUT_SECONDS)
    yield destination
    await destination.close()


async def test_an_event_arrives_as_a_signed_cloudevent_the_subscriber_can_verify(
    receiver: WebhookReceiver, destination: WebhookDestination
) -> None:
    event = an_event()

    await destination.deliver(event)

    [request] = receiver.wait_for(1)
    assert (request.method, request.path) == ("POST", "/hooks")
    assert request.body == event.body.encode()
    assert request.header("Content-Type") == "application/cloudevents+json"
    assert request.header("Webhook-Id") == event.event_id
    assert (request.header("User-Agent") or "").startswith("payment-service/")
    signed_at = verify_signature(SECRET, request.header("Payment-Signature"), request.body)
    assert abs(signed_at - request.received_at.timestamp()) < 5
    with pytest.raises(InvalidSignature):
        verify_signature("not-the-secret", request.header("Payment-Signature"), request.body)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_any_2xx_answer_is_a_delivery(
    receiver: WebhookReceiver, destination: WebhookDestination, status: int
) -> None:
    receiver.answer(status)

    await destination.deliver(an_event())

    assert len(receiver.wait_for(1)) == 1


@pytest.mark.parametrize("status", [500, 503, 400, 404, 410])
async def test_an_answer_outside_2xx_fails_the_delivery(
    receiver: WebhookReceiver, destination: WebhookDestination, status: int
) -> None:
    receiver.answer(status)

    with pytest.raises(DeliveryFailed, match=f"answered {status}"):
        await destination.deliver(an_event())
    assert len(receiver.wait_for(1)) == 1


async def test_a_redirect_is_not_followed(
    receiver: WebhookReceiver, destination: WebhookDestination
) -> None:
    receiver.answer(307, {"Location": f"{receiver.url}/moved"})

    with pytest.raises(DeliveryFailed, match="answered 307"):
        await destination.deliver(an_event())
    assert [r.path for r in receiver.requests] == ["/hooks"]


async def test_a_subscriber_that_hangs_fails_the_delivery_within_the_timeout(
    receiver: WebhookReceiver, destination: WebhookDestination
) -> None:
    receiver.hang()

    started = time.monotonic()
    with pytest.raises(DeliveryFailed, match=r"no answer within 0\.5 s"):
        await destination.deliver(an_event())
    waited = time.monotonic() - started

    assert TIMEOUT_SECONDS * 0.9 <= waited < TIMEOUT_SECONDS + 1.0
    assert len(receiver.wait_for(1)) == 1
    receiver.release()


async def test_a_subscriber_gone_fails_the_delivery_and_is_delivered_to_once_back(
    receiver: WebhookReceiver, destination: WebhookDestination
) -> None:
    await destination.deliver(an_event(1))  # leaves a kept-alive connection in the pool

    receiver.disappear()
    started = time.monotonic()
    with pytest.raises(DeliveryFailed, match="request failed"):
        await destination.deliver(an_event(2))
    assert time.monotonic() - started < TIMEOUT_SECONDS + 1.0

    receiver.come_back()
    await destination.deliver(an_event(3))

    assert [r.header("Webhook-Id") for r in receiver.wait_for(2)] == [
        an_event(1).event_id,
        an_event(3).event_id,
    ]


async def test_the_name_and_the_failures_carry_no_secret_of_the_url(
    receiver: WebhookReceiver,
) -> None:
    receiver.disappear()
    url = f"{receiver.url}?token=s3cr3t-t0ken"
    destination = WebhookDestination(url, SECRET, timeout_seconds=TIMEOUT_SECONDS)
    other = WebhookDestination(f"{receiver.url}?token=other", SECRET)
    try:
        with pytest.raises(DeliveryFailed) as failure:
            await destination.deliver(an_event())
    finally:
        await destination.close()
        await other.close()

    assert destination.name.startswith(f"webhook:{receiver.url}#")
    assert "s3cr3t" not in destination.name
    assert "s3cr3t" not in str(failure.value)
    assert "s3cr3t" not in repr(destination)
    assert SECRET not in repr(destination)
    assert other.name != destination.name, "two subscribers must keep two names"
    assert WebhookDestination(url, SECRET).name == destination.name, "names must be stable"


async def test_trace_context_headers_are_added_when_a_tracer_is_wired(
    receiver: WebhookReceiver,
) -> None:
    def inject(headers: MutableMapping[str, str]) -> None:
        headers["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    destination = WebhookDestination(receiver.url, SECRET, inject_trace=inject)
    try:
        await destination.deliver(an_event())
    finally:
        await destination.close()

    [request] = receiver.wait_for(1)
    assert request.header("traceparent") == (
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    )


async def test_subscribers_share_one_client_closed_with_the_last_of_them(
    receiver: WebhookReceiver,
) -> None:
    shared = SharedHttpClient()
    first = WebhookDestination(receiver.url, SECRET, client=shared)
    second = WebhookDestination(f"{receiver.url}/second", SECRET, client=shared)

    await first.close()
    await second.deliver(an_event())
    await second.close()

    assert [r.path for r in receiver.wait_for(1)] == ["/hooks/second"]
    assert shared.is_closed


@pytest.mark.parametrize(
    ("url", "secret", "timeout"),
    [
        ("ftp://example.com/hooks", SECRET, 1.0),
        ("https:///hooks", SECRET, 1.0),
        ("https://example.com/hooks", "", 1.0),
        ("https://example.com/hooks", SECRET, 0.0),
    ],
)
def test_a_destination_that_cannot_work_is_refused_when_built(
    url: str, secret: str, timeout: float
) -> None:
    with pytest.raises(ValueError, match="webhook"):
        WebhookDestination(url, secret, timeout_seconds=timeout)
