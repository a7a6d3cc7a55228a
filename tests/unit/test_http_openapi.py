"""The OpenAPI document: the API key scheme, which operations need it, and a problem example
for every error of every operation."""

from __future__ import annotations

from typing import Any

import pytest

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.entrypoints.http.auth import OPEN_PATHS, ApiKeys
from tests.unit.http_support import PROBLEM_JSON, PROBLEM_MEMBERS, client_on

PROTECTED = [
    ("/pay", "post"),
    ("/payments/{payment_id}", "get"),
    ("/orders/{order_id}/payments", "get"),
]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    with client_on(lambda: InMemoryUnitOfWork(InMemoryStore())) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    found: dict[str, Any] = response.json()
    return found


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def examples(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [example["value"] for example in response["content"][PROBLEM_JSON]["examples"].values()]


def test_the_api_key_is_a_bearer_token_asked_for_globally(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]

    assert list(schemes) == ["apiKey"]
    assert schemes["apiKey"]["type"] == "http"
    assert schemes["apiKey"]["scheme"] == "bearer"
    assert "PAYMENT_API_KEYS" in schemes["apiKey"]["description"]
    assert document["security"] == [{"apiKey": []}]


def test_the_probes_and_the_metrics_ask_for_no_key(document: dict[str, Any]) -> None:
    open_operations = {
        path: operation["security"]
        for path, _, operation in operations(document)
        if "security" in operation
    }

    assert open_operations == {path: [] for path in OPEN_PATHS}
    for path in OPEN_PATHS:
        assert "401" not in document["paths"][path]["get"]["responses"]


def test_the_document_lists_the_endpoints_of_the_spec(document: dict[str, Any]) -> None:
    listed = {(path, method) for path, method, _ in operations(document)}

    assert listed >= {*PROTECTED, *((path, "get") for path in OPEN_PATHS)}


@pytest.mark.parametrize(("path", "method"), PROTECTED)
def test_every_protected_operation_documents_the_401_problem(
    document: dict[str, Any], path: str, method: str
) -> None:
    response = document["paths"][path][method]["responses"]["401"]

    assert list(response["content"]) == [PROBLEM_JSON]
    assert response["content"][PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/Problem"}
    [example] = examples(response)
    assert example["code"] == "unauthorized"
    assert example["status"] == 401
    assert set(example) >= PROBLEM_MEMBERS


def test_every_error_of_every_operation_is_a_problem_with_an_example_and_a_code(
    document: dict[str, Any],
) -> None:
    errors = [
        (path, method, status, response)
        for path, method, operation in operations(document)
        for status, response in operation["responses"].items()
        if status[0] in "45"
    ]

    assert len(errors) >= 15
    for path, method, status, response in errors:
        where = f"{method.upper()} {path} {status}"
        assert list(response["content"]) == [PROBLEM_JSON], where
        found = examples(response)
        assert found, where
        for example in found:
            assert set(example) >= PROBLEM_MEMBERS, where
            assert example["status"] == int(status), where
            assert example["type"] == "/problems/" + example["code"].replace("_", "-"), where


@pytest.mark.parametrize(
    ("path", "status", "codes"),
    [
        ("/payments/{payment_id}", "404", {"payment_not_found"}),
        ("/payments/{payment_id}", "422", {"validation_error"}),
        ("/payments/{payment_id}", "503", {"service_unavailable"}),
        ("/orders/{order_id}/payments", "404", {"order_not_found"}),
        ("/orders/{order_id}/payments", "422", {"validation_error"}),
        ("/readyz", "503", {"service_unavailable"}),
    ],
)
def test_the_reads_and_the_readiness_document_their_problems(
    document: dict[str, Any], path: str, status: str, codes: set[str]
) -> None:
    response = document["paths"][path]["get"]["responses"][status]

    assert {example["code"] for example in examples(response)} == codes


@pytest.mark.parametrize(
    ("path", "parameter", "schema"),
    [
        ("/payments/{payment_id}", "payment_id", "PaymentView"),
        ("/orders/{order_id}/payments", "order_id", "OrderPayments"),
    ],
)
def test_the_reads_document_their_id_range_and_their_body(
    document: dict[str, Any], path: str, parameter: str, schema: str
) -> None:
    operation = document["paths"][path]["get"]
    [described] = operation["parameters"]
    success = operation["responses"]["200"]["content"]["application/json"]["schema"]

    assert (described["name"], described["in"], described["required"]) == (parameter, "path", True)
    assert (described["schema"]["minimum"], described["schema"]["maximum"]) == (1, 2147483647)
    assert success == {"$ref": f"#/components/schemas/{schema}"}
    assert document["components"]["schemas"][schema]["examples"]


def test_the_payment_view_has_the_receipts_fields_but_the_message_and_its_refunds(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    view = set(schemas["PaymentView"]["properties"])
    receipt = {"order_id", "payment_id", "amount", "status", "created_at"}

    assert view == receipt | {"amount_refunded", "refunded"}
    assert set(schemas["PaymentReceipt"]["properties"]) == receipt | {"message"}
    assert set(schemas["PaymentView"]["examples"][0]) == view


@pytest.mark.parametrize(
    ("path", "parameter"),
    [("/payments/{payment_id}", "payment_id"), ("/orders/{order_id}/payments", "order_id")],
)
def test_the_validation_example_of_a_read_names_its_path_parameter(
    document: dict[str, Any], path: str, parameter: str
) -> None:
    [example] = examples(document["paths"][path]["get"]["responses"]["422"])

    assert [error.get("parameter") for error in example["errors"]] == [parameter]


def test_the_document_is_the_same_with_api_keys_configured(document: dict[str, Any]) -> None:
    keys = ApiKeys(["shop-a-0123456789abcdef"])
    with client_on(lambda: InMemoryUnitOfWork(InMemoryStore()), api_keys=keys) as client:
        response = client.get(
            "/openapi.json", headers={"Authorization": "Bearer shop-a-0123456789abcdef"}
        )

    assert response.json() == document


def test_pay_documents_each_problem_it_answers_under_its_status(document: dict[str, Any]) -> None:
    responses = document["paths"]["/pay"]["post"]["responses"]
    codes = {
        status: {example["code"] for example in examples(response)}
        for status, response in responses.items()
        if status[0] in "45"
    }

    assert codes == {
        "400": {"malformed_request"},
        "401": {"unauthorized"},
        "404": {"order_not_found"},
        "409": {"order_not_payable", "idempotency_key_in_use"},
        "413": {"payload_too_large"},
        "415": {"unsupported_media_type"},
        "422": {"validation_error", "amount_mismatch", "idempotency_key_reused"},
        "503": {"service_unavailable"},
    }


def test_pay_reads_only_a_json_body_in_utf_8(document: dict[str, Any]) -> None:
    body = document["paths"]["/pay"]["post"]["requestBody"]

    assert list(body["content"]) == ["application/json"]
    assert "charset=utf-8" in body["description"]
    assert "415" in body["description"]
    assert "byte-order mark" in body["description"]
