"""docs/asyncapi.yaml describes what is really sent: a well-formed AsyncAPI 3.0 document whose
schemas accept the events the service builds and the headers its webhooks carry, and whose
RabbitMQ bindings are the ones the publisher uses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import httpx2
import jsonschema_rs
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from payment.adapters.cloudevents import new_event_id, payment_succeeded, refund_succeeded
from payment.adapters.destinations import rabbitmq, webhook
from payment.adapters.settings import Settings
from payment.domain.delivery import OutboxEvent
from payment.domain.events import PaymentSucceeded, RefundSucceeded
from payment.domain.model import Money
from payment.domain.refunds import RefundReason

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


@cache
def load_document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture
def document() -> dict[str, Any]:
    return load_document()


@cache
def validator(schema: str) -> jsonschema_rs.Validator:
    """A validator of ``#/components/schemas/<schema>`` (AsyncAPI's default schema format is
    a superset of JSON Schema draft 7), checking formats."""
    components = load_document()["components"]
    root = {"$ref": f"#/components/schemas/{schema}", "components": components}
    return jsonschema_rs.Draft7Validator(root, validate_formats=True)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: only local references are used"
    node: Any = document
    for part in ref[2:].split("/"):
        assert isinstance(node, dict), f"{ref}: {part} is not in a mapping"
        assert part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def an_event_body(order_id: int = 123, payment_id: int = 456, amount: str = "199.99") -> str:
    event = PaymentSucceeded(
        payment_id=payment_id,
        order_id=order_id,
        amount=Money.of(amount),
        created_at=datetime.now(UTC),
    )
    return payment_succeeded(event, event_id=new_event_id(), source="/payment-service")


def a_refund_event_body(
    *,
    refund_id: int = 17,
    payment_id: int = 456,
    order_id: int = 123,
    amount: str = "5.00",
    amount_refunded: str = "5.00",
    reason: RefundReason | None = RefundReason.REQUESTED_BY_CUSTOMER,
) -> str:
    event = RefundSucceeded(
        refund_id=refund_id,
        payment_id=payment_id,
        order_id=order_id,
        amount=Money.of(amount),
        amount_refunded=Money.of(amount_refunded),
        reason=reason,
        created_at=datetime.now(UTC),
    )
    return refund_succeeded(event, event_id=new_event_id(), source="/payment-service")


EVENT_SCHEMAS = {
    PaymentSucceeded.type: "PaymentSucceededEvent",
    RefundSucceeded.type: "RefundSucceededEvent",
}
"""Each event type the service publishes, and the payload schema that describes it."""


def test_it_is_an_asyncapi_3_document_with_both_channels(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert {"title", "version"} <= document["info"].keys()
    protocols = {server["protocol"] for server in document["servers"].values()}
    assert protocols == {"https", "amqp"}
    assert {op["action"] for op in document["operations"].values()} == {"send"}


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    found = list(refs(document))

    assert len(found) > 10
    for ref in found:
        resolve(document, ref)


def test_each_operation_sends_messages_of_its_own_channel(document: dict[str, Any]) -> None:
    for name, operation in document["operations"].items():
        channel_ref = operation["channel"]["$ref"]
        channel = resolve(document, channel_ref)
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel_ref}/messages/"), name
        for server in channel["servers"]:
            assert server["$ref"].startswith("#/servers/"), name


def test_the_payload_schema_accepts_the_event_the_service_builds() -> None:
    body = json.loads(an_event_body())

    validator("PaymentSucceededEvent").validate(body)


@given(
    order_id=st.integers(min_value=1, max_value=2**31 - 1),
    payment_id=st.integers(min_value=1, max_value=2**31 - 1),
    cents=st.integers(min_value=1, max_value=9_999_999_999),
)
def test_the_payload_schema_accepts_any_payment_the_service_can_tell(
    order_id: int, payment_id: int, cents: int
) -> None:
    amount = f"{cents // 100}.{cents % 100:02d}"
    body = json.loads(an_event_body(order_id, payment_id, amount))

    assert validator("PaymentSucceededEvent").is_valid(body)
    assert body["subject"] == str(order_id)
    assert body["data"]["amount"] == amount


def money_text(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def test_the_refund_payload_schema_accepts_the_event_the_service_builds() -> None:
    body = json.loads(a_refund_event_body())

    validator("RefundSucceededEvent").validate(body)
    assert not validator("PaymentSucceededEvent").is_valid(body)
    assert not validator("RefundSucceededEvent").is_valid(json.loads(an_event_body()))


@given(
    refund_id=st.integers(min_value=1, max_value=2**31 - 1),
    payment_id=st.integers(min_value=1, max_value=2**31 - 1),
    order_id=st.integers(min_value=1, max_value=2**31 - 1),
    paid_cents=st.integers(min_value=1, max_value=9_999_999_999),
    data=st.data(),
    reason=st.sampled_from([None, *RefundReason]),
)
def test_the_refund_payload_schema_accepts_any_refund_the_service_can_tell(
    refund_id: int,
    payment_id: int,
    order_id: int,
    paid_cents: int,
    data: st.DataObject,
    reason: RefundReason | None,
) -> None:
    refunded_cents = data.draw(st.integers(min_value=1, max_value=paid_cents))
    cents = data.draw(st.integers(min_value=1, max_value=refunded_cents))
    body = json.loads(
        a_refund_event_body(
            refund_id=refund_id,
            payment_id=payment_id,
            order_id=order_id,
            amount=money_text(cents),
            amount_refunded=money_text(refunded_cents),
            reason=reason,
        )
    )

    assert validator("RefundSucceededEvent").is_valid(body)
    assert body["subject"] == str(order_id)
    assert (body["data"]["amount"], body["data"]["amount_refunded"]) == (
        money_text(cents),
        money_text(refunded_cents),
    )
    assert body["data"]["reason"] == (None if reason is None else reason.value)


@pytest.mark.parametrize(
    ("change", "value"),
    [
        (("type",), "payment.succeeded"),
        (("subject",), "0"),
        (("data", "refund_id"), "17"),
        (("data", "refund_id"), 0),
        (("data", "amount"), 5.0),
        (("data", "amount_refunded"), "5"),
        (("data", "reason"), "bored"),
        (("data", "reason"), ""),
        (("data", "created_at"), "tomorrow"),
        (("data", "surprise"), True),
    ],
)
def test_the_refund_payload_schema_is_not_vacuous(change: tuple[str, ...], value: object) -> None:
    body = json.loads(a_refund_event_body())
    target = body
    for key in change[:-1]:
        target = target[key]
    target[change[-1]] = value

    assert not validator("RefundSucceededEvent").is_valid(body)


@pytest.mark.parametrize("member", ["refund_id", "amount_refunded", "reason", "created_at"])
def test_the_refund_payload_schema_requires_every_member(member: str) -> None:
    body = json.loads(a_refund_event_body())
    del body["data"][member]

    assert not validator("RefundSucceededEvent").is_valid(body)


@pytest.mark.parametrize(
    ("change", "value"),
    [
        (("id",), "not-a-uuid"),
        (("type",), "payment.failed"),
        (("time",), "yesterday"),
        (("data", "amount"), 199.99),
        (("data", "amount"), "199.9"),
        (("data", "order_id"), "123"),
        (("data", "surprise"), True),
    ],
)
def test_the_payload_schema_is_not_vacuous(change: tuple[str, ...], value: object) -> None:
    body = json.loads(an_event_body())
    target = body
    for key in change[:-1]:
        target = target[key]
    target[change[-1]] = value

    assert not validator("PaymentSucceededEvent").is_valid(body)


def test_every_documented_example_is_valid_and_of_its_message_type(
    document: dict[str, Any],
) -> None:
    checked = set()
    for message in document["components"]["messages"].values():
        schema = message["payload"]["$ref"].removeprefix("#/components/schemas/")
        assert EVENT_SCHEMAS[message["name"]] == schema
        assert message["examples"]
        for example in message["examples"]:
            validator(schema).validate(example["payload"])
            assert example["payload"]["type"] == message["name"]
            checked.add(message["name"])

    assert checked == set(EVENT_SCHEMAS)


@pytest.mark.anyio
@pytest.mark.parametrize("body", [an_event_body(), a_refund_event_body()], ids=list(EVENT_SCHEMAS))
async def test_the_header_schema_accepts_the_headers_a_webhook_carries(body: str) -> None:
    sent: list[httpx2.Request] = []

    def subscriber(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(204)

    client = webhook.SharedHttpClient(
        httpx2.AsyncClient(transport=httpx2.MockTransport(subscriber))
    )
    destination = webhook.WebhookDestination("https://shop.example/hooks", "secret", client=client)
    event = json.loads(body)
    await destination.deliver(
        OutboxEvent(1, event["id"], event["type"], "123", body, datetime.now(UTC))
    )
    await destination.close()

    [request] = sent
    assert request.content == body.encode()
    headers = {
        name: request.headers[name]
        for name in ("Content-Type", "Webhook-Id", webhook.SIGNATURE_HEADER, "User-Agent")
    }
    validator("WebhookHeaders").validate(headers)
    assert not validator("WebhookHeaders").is_valid(
        {**headers, webhook.SIGNATURE_HEADER: "v1=deadbeef"}
    )


@pytest.mark.parametrize(
    ("event_type", "channel_name", "operation_name", "message_name"),
    [
        (
            PaymentSucceeded.type,
            "paymentSucceededRoutingKey",
            "publishPaymentSucceeded",
            "paymentSucceededAmqp",
        ),
        (
            RefundSucceeded.type,
            "refundSucceededRoutingKey",
            "publishRefundSucceeded",
            "refundSucceededAmqp",
        ),
    ],
)
def test_the_rabbitmq_bindings_are_those_the_publisher_uses(
    document: dict[str, Any],
    event_type: str,
    channel_name: str,
    operation_name: str,
    message_name: str,
) -> None:
    """The routing key is the event type (``rabbitmq`` publishes with ``event.type``)."""
    channel = document["channels"][channel_name]
    exchange = channel["bindings"]["amqp"]["exchange"]
    operation = document["operations"][operation_name]
    message = document["components"]["messages"][message_name]

    assert channel["address"] == event_type
    assert operation["channel"]["$ref"] == f"#/channels/{channel_name}"
    assert exchange["name"] == Settings.model_fields["payment_rabbitmq_exchange"].default
    assert (exchange["type"], exchange["durable"]) == ("topic", True)
    bindings = operation["bindings"]["amqp"]
    assert (bindings["deliveryMode"], bindings["mandatory"]) == (2, False)
    assert message["contentType"] == rabbitmq.CONTENT_TYPE == webhook.CONTENT_TYPE
    assert message["bindings"]["amqp"]["messageType"] == event_type
    assert message["x-amqp-properties"]["type"] == event_type


@pytest.mark.parametrize("event_type", list(EVENT_SCHEMAS))
def test_each_event_type_goes_to_every_subscriber_and_to_the_exchange(
    document: dict[str, Any], event_type: str
) -> None:
    sent: dict[str, set[str]] = {}
    for operation in document["operations"].values():
        for message_ref in operation["messages"]:
            message = resolve(document, resolve(document, message_ref["$ref"])["$ref"])
            channel = resolve(document, operation["channel"]["$ref"])
            for server in channel["servers"]:
                sent.setdefault(message["name"], set()).add(server["$ref"])

    assert sent[event_type] == {"#/servers/subscriber", "#/servers/rabbitmq"}
