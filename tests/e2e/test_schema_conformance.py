"""The service keeps the promises of its own /openapi.json (SPEC §2), checked by schemathesis.

One real `payment-service serve`, with an API key, over a database of its own (migrated, seeded
with orders, dropped afterwards), is sent the documented examples, schemathesis's coverage cases
and a bounded number of generated requests per operation, valid and invalid. Every answer must
be no server error, with a documented status code and content type and a body that matches its
schema; invalid requests must be refused, valid ones never refused as malformed or invalid, and
a request without the key refused. Every example in the document must match its schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import jsonschema_rs
import pytest
import schemathesis
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.errors import FailureGroup
from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from payment.adapters.clock import SystemClock
from payment.adapters.sqlalchemy import migrations
from payment.entrypoints.http import Services, create_app
from tests.e2e.server import RunningService, running_service
from tests.support.databases import DatabaseServer
from tests.support.orders import add_orders

API_KEY = "schemathesis-conformance-key"
AUTHORIZATION = {"Authorization": f"Bearer {API_KEY}"}
MAX_EXAMPLES = 50
"""Generated requests per operation, on top of the documented examples and coverage cases."""
REQUEST_TIMEOUT_SECONDS = 10

ORDERS = 130
"""Orders 1 to 130, pending: the small ids schemathesis tries first (1, 2, boundaries) exist."""
TOTAL = "1.00"
UNPAYABLE_ORDER, UNPAYABLE_TOTAL = 1, "4321.09"
"""Order 1 stays pending: no amount generated matches its total, so it is refused 422."""
PAID_ORDER = 2
"""Paid before the run: payment 1 exists, and paying order 2 again is refused 409."""


def _without_database() -> Any:
    raise AssertionError("the document is made without a database")


# Schemathesis generates its tests when pytest collects this module, before any server runs, so
# it reads the document the application makes; test_the_document_tested_is_the_one_served checks
# that the running service serves exactly this one.
DOCUMENT: dict[str, Any] = create_app(
    Services(unit_of_work=_without_database, clock=SystemClock(), database_ready=_without_database)
).openapi()

[PAY_EXAMPLE] = DOCUMENT["components"]["schemas"]["PayRequest"]["examples"]
EXAMPLE_ORDER, EXAMPLE_TOTAL = PAY_EXAMPLE["order_id"], str(PAY_EXAMPLE["amount"])
"""The documented request example pays this order its total: the first time, it succeeds."""

schema = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=schemathesis.Config.from_dict(
        {
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "request-timeout": REQUEST_TIMEOUT_SECONDS,
            "auth": {"openapi": {"apiKey": {"bearer": API_KEY}}},
            # Failures show the Idempotency-Key they sent; only the API key is hidden.
            "output": {
                "sanitization": {
                    "keys-to-sanitize": ["authorization"],
                    "sensitive-markers": ["authorization"],
                }
            },
            "checks": {
                # Replaced by valid_requests_are_not_refused_as_invalid: the built-in check takes
                # any 422 to a schema-valid request as a rejection, but POST /pay answers 422 to
                # well-formed requests for decisions that depend on the database (SPEC §2:
                # amount_mismatch, idempotency_key_reused), not on the request's form.
                "positive_data_acceptance": {"enabled": False},
            },
        }
    ),
)


def valid_requests_are_not_refused_as_invalid(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> bool | None:
    """A request that matches the document is never refused as malformed or invalid: the
    document states every rule the service applies to the form of a request."""
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return None
    code = _problem_code(response)
    assert code not in ("malformed_request", "validation_error"), (
        f"a request that matches the document was refused with {response.status_code} "
        f"{code}: {response.text}"
    )
    return None


def _problem_code(response: Response) -> str | None:
    """The ``code`` of a problem answer; content_type_conformance and
    response_schema_conformance judge the answers that are not problems."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


ANSWERS: set[tuple[str, int, str | None]] = set()
"""Each (operation, status, problem code) the service answered during the run."""
FAILED: set[str] = set()
"""The operations whose run found a failure."""


def record_the_answer(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    ANSWERS.add((case.operation.label, response.status_code, _problem_code(response)))
    return None


@pytest.fixture(scope="module")
def conformance_database(postgres_server: DatabaseServer) -> Iterator[URL]:
    """A database of this module's own, so that nothing done here shows elsewhere, with
    pending orders 1 to 130."""
    with postgres_server.scratch("payment_conformance") as url:
        migrations.upgrade(url)
        engine = create_engine(url)
        try:
            totals = {UNPAYABLE_ORDER: UNPAYABLE_TOTAL, EXAMPLE_ORDER: EXAMPLE_TOTAL}
            ids = add_orders(engine, *(totals.get(i, TOTAL) for i in range(1, ORDERS + 1)))
            assert ids == list(range(1, ORDERS + 1))
        finally:
            engine.dispose()
        yield url


@pytest.fixture(scope="module")
def conformance_service(
    conformance_database: URL, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    """The service, with an API key, on that database; order 2 paid."""
    with running_service(
        {
            "DATABASE_URL": conformance_database.render_as_string(hide_password=False),
            "PAYMENT_API_KEYS": API_KEY,
        },
        tmp_path_factory.mktemp("conformance-service"),
    ) as running:
        with httpx2.Client(base_url=running.base_url, headers=AUTHORIZATION) as client:
            paid = client.post("/pay", json={"order_id": PAID_ORDER, "amount": TOTAL})
            assert paid.status_code == 200, paid.text
        yield running


@schema.parametrize()
def test_every_answer_conforms_to_the_document(
    case: Case[Any], conformance_service: RunningService
) -> None:
    try:
        case.call_and_validate(
            base_url=conformance_service.base_url,
            additional_checks=[record_the_answer, valid_requests_are_not_refused_as_invalid],
        )
    except (Exception, FailureGroup):
        FAILED.add(case.operation.label)
        raise


@pytest.mark.parametrize(
    ("operation", "answers"),
    [
        pytest.param(
            "POST /pay",
            {
                (200, None),
                (401, "unauthorized"),
                (404, "order_not_found"),
                (409, "order_not_payable"),
                (422, "amount_mismatch"),
                (422, "validation_error"),
            },
            id="POST /pay",
        ),
        pytest.param(
            "GET /payments/{payment_id}",
            {(200, None), (401, "unauthorized"), (404, "payment_not_found")},
            id="GET /payments/{payment_id}",
        ),
        pytest.param(
            "GET /orders/{order_id}/payments",
            {(200, None), (401, "unauthorized"), (404, "order_not_found")},
            id="GET /orders/{order_id}/payments",
        ),
    ],
)
def test_the_run_reached_the_decisions(
    operation: str, answers: set[tuple[int, str | None]]
) -> None:
    """The run above reached the service's decisions, not only its refusals at the door: the
    seeded orders and payment made it pay, find nothing, refuse a paid order and a wrong
    amount. It runs after that run, in file order, and only when that run passed."""
    reached = {(status, code) for label, status, code in ANSWERS if label == operation}
    if not reached:
        pytest.skip(f"{operation} was not run")
    if operation in FAILED:
        pytest.skip(f"{operation} found a failure, which stopped its run")
    assert answers <= reached, sorted(reached, key=str)


@pytest.fixture(scope="module")
def served_document(conformance_service: RunningService) -> dict[str, Any]:
    response = httpx2.get(
        f"{conformance_service.base_url}/openapi.json", headers=AUTHORIZATION, timeout=15.0
    )
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def test_the_document_tested_is_the_one_served(served_document: dict[str, Any]) -> None:
    assert served_document == DOCUMENT


def _examples(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """Every example in the document: where it stands, the schema it illustrates, its value."""
    for name, component in document["components"]["schemas"].items():
        where = f"#/components/schemas/{name}"
        for index, value in enumerate(component.get("examples", [])):
            yield f"{where}/examples/{index}", {"$ref": where}, value
        for member, member_schema in component.get("properties", {}).items():
            for index, value in enumerate(member_schema.get("examples", [])):
                yield f"{where}/properties/{member}/examples/{index}", member_schema, value
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            media = [
                (f"{where} request body {media_type}", content)
                for media_type, content in operation.get("requestBody", {})
                .get("content", {})
                .items()
            ] + [
                (f"{where} {status} {media_type}", content)
                for status, response in operation["responses"].items()
                for media_type, content in response.get("content", {}).items()
            ]
            for place, content in media:
                if "example" in content:
                    yield f"{place} example", content.get("schema", {}), content["example"]
                for name, example in content.get("examples", {}).items():
                    yield f"{place} examples/{name}", content.get("schema", {}), example["value"]
            for parameter in operation.get("parameters", []):
                place = f"{where} parameter {parameter['name']}"
                if "example" in parameter:
                    yield f"{place} example", parameter["schema"], parameter["example"]
                for name, example in parameter.get("examples", {}).items():
                    yield f"{place} examples/{name}", parameter["schema"], example["value"]


def test_every_documented_example_matches_its_schema(served_document: dict[str, Any]) -> None:
    examples = list(_examples(served_document))
    invalid = []
    for where, example_schema, value in examples:
        # The schema within the document, so that its references resolve.
        rooted = {**example_schema, "components": served_document["components"]}
        validator = jsonschema_rs.validator_for(rooted, validate_formats=True)
        invalid += [f"{where}: {error.message}" for error in validator.iter_errors(value)]

    assert examples
    assert not invalid, "\n".join(invalid)


def test_every_documented_problem_example_has_its_response_status_and_code(
    served_document: dict[str, Any],
) -> None:
    wrong = [
        f"{method.upper()} {path} {status} {name}: {example['value']}"
        for path, operations in served_document["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        for media_type, content in response.get("content", {}).items()
        if media_type == "application/problem+json"
        for name, example in content.get("examples", {}).items()
        if example["value"].get("status") != int(status) or example["value"].get("code") != name
    ]

    assert not wrong, wrong
