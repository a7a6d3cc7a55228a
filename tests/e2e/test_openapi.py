"""The API describes itself: /openapi.json (SPEC §2). Its pages, /docs and /redoc, are tested
in a browser: test_docs_in_browser.py."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

PAY_PROBLEMS = {
    "400": {"malformed_request"},
    "404": {"order_not_found"},
    "409": {"order_not_payable"},
    "413": {"payload_too_large"},
    "422": {"validation_error", "amount_mismatch"},
    "503": {"service_unavailable"},
}
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "code"}
RECEIPT_MEMBERS = {"message", "order_id", "payment_id", "amount", "status", "created_at"}


@pytest.fixture
def document(client: httpx2.Client) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    reference = schema.get("$ref")
    if reference is None:
        return schema
    name = reference.removeprefix("#/components/schemas/")
    resolved: dict[str, Any] = document["components"]["schemas"][name]
    return resolved


def test_pay_documents_every_error_status_with_an_example_of_each_problem(
    document: dict[str, Any],
) -> None:
    responses = document["paths"]["/pay"]["post"]["responses"]

    assert PAY_PROBLEMS.keys() <= responses.keys()
    for status, codes in PAY_PROBLEMS.items():
        content = responses[status]["content"]
        assert "application/problem+json" in content, (status, content)
        examples = content["application/problem+json"]["examples"]
        assert codes <= examples.keys(), (status, examples)
        for code in codes:
            value = examples[code]["value"]
            assert value.keys() >= PROBLEM_MEMBERS, value
            assert (value["status"], value["code"]) == (int(status), code)


def test_pay_documents_its_success_with_an_example_receipt(document: dict[str, Any]) -> None:
    success = document["paths"]["/pay"]["post"]["responses"]["200"]

    schema = resolve(document, success["content"]["application/json"]["schema"])

    assert schema["properties"].keys() >= RECEIPT_MEMBERS
    [receipt] = schema["examples"]
    assert set(receipt) == RECEIPT_MEMBERS
    assert receipt["amount"] == "199.99"


def test_pay_documents_its_request_body_with_an_example(document: dict[str, Any]) -> None:
    request_body = document["paths"]["/pay"]["post"]["requestBody"]

    schema = resolve(document, request_body["content"]["application/json"]["schema"])

    assert {"order_id", "amount"} <= schema["properties"].keys()
    assert set(schema["required"]) == {"order_id", "amount"}
    assert schema["examples"], schema
