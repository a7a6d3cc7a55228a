"""/docs and /redoc in a real browser (SPEC §2): headless Chromium, cut off from everything but
loopback, renders every operation from the service's own assets; with API keys on, the pages
open without one and a reader who enters a key under Authorize pays an order from the page.

Screenshots go to $BROWSER_SCREENSHOTS (default: the test's temporary folder). Without Chromium
the tests are skipped, saying so; with REQUIRE_BROWSER=1 (CI) they fail instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine

from tests.e2e.browser import Page, chromium_page, find_chromium
from tests.e2e.checks import stored_order
from tests.e2e.secured import KeyedService
from tests.e2e.server import RunningService
from tests.support.orders import add_orders

RENDER_TIMEOUT_SECONDS = 10.0
LOCAL_SCHEMES = ("data:", "blob:")

# Chromium looked for first, before the services start: without it, a test is skipped at once.
pytestmark = pytest.mark.usefixtures("chromium")


@pytest.fixture(scope="session")
def chromium() -> str:
    return find_chromium()


@pytest.fixture
def page(chromium: str) -> Iterator[Page]:
    """A browser of the test's own: what it records is this test's alone."""
    with chromium_page(chromium) as page:
        yield page


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    configured = os.environ.get("BROWSER_SCREENSHOTS")
    return Path(configured) if configured else tmp_path


def operations(base_url: str) -> list[dict[str, str]]:
    """Each operation of the service's document: method, path, id and the tag it shows under."""
    document: dict[str, Any] = httpx2.get(f"{base_url}/openapi.json", timeout=15.0).json()
    return [
        {
            "method": method.upper(),
            "path": path,
            "id": operation["operationId"],
            "tag": (operation.get("tags") or ["default"])[0],
        }
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def assert_only_the_service_was_asked(page: Page, base_url: str) -> None:
    """Every request the page sent went to the service; what the page's policy refused was
    never sent, and nothing failed to load."""
    elsewhere = [
        url
        for url in page.requested
        if not url.startswith((base_url + "/", *LOCAL_SCHEMES)) and url not in page.blocked
    ]
    assert elsewhere == [], f"the page asked other hosts: {elsewhere}"
    assert page.errors == []


def test_swagger_ui_renders_every_operation_offline(
    page: Page, service: RunningService, screenshots: Path
) -> None:
    expected = operations(service.base_url)

    status = page.open(f"{service.base_url}/docs")
    page.wait_for(
        f"document.querySelectorAll('.opblock').length >= {len(expected)}",
        timeout=RENDER_TIMEOUT_SECONDS,
        what="Swagger UI rendering the operations",
    )
    rendered = page.evaluate(
        "[...document.querySelectorAll('.opblock')].map(block => ({"
        " id: block.id,"
        " method: block.querySelector('.opblock-summary-method').textContent,"
        " path: block.querySelector('.opblock-summary-path').dataset.path}))"
    )
    page.screenshot(screenshots / "docs.png")

    assert status == 200
    assert sorted((o["method"], o["path"]) for o in rendered) == sorted(
        (o["method"], o["path"]) for o in expected
    )
    assert {o["id"] for o in rendered} == {f"operations-{o['tag']}-{o['id']}" for o in expected}
    assert ("POST", "/pay") in {(o["method"], o["path"]) for o in rendered}
    assert page.evaluate("document.querySelector('.btn.authorize') !== null")
    assert_only_the_service_was_asked(page, service.base_url)


def test_redoc_renders_every_operation_offline(
    page: Page, service: RunningService, screenshots: Path
) -> None:
    expected = {o["id"] for o in operations(service.base_url)}

    status = page.open(f"{service.base_url}/redoc")
    page.wait_for(
        f"document.querySelectorAll('[data-section-id^=\"operation/\"]').length >= {len(expected)}",
        timeout=RENDER_TIMEOUT_SECONDS,
        what="ReDoc rendering the operations",
    )
    sections = page.evaluate(
        "[...document.querySelectorAll('[data-section-id]')].map(e => e.dataset.sectionId)"
    )
    text = page.evaluate("document.body.innerText")
    page.screenshot(screenshots / "redoc.png")

    assert status == 200
    assert {s.rpartition("operation/")[2] for s in sections if "operation/" in s} == expected
    assert "/pay" in text
    assert_only_the_service_was_asked(page, service.base_url)


def execute_pay(page: Page, operation: str, order_id: int, amount: str) -> str:
    """Send POST /pay from its block in Swagger UI; the status the page shows for it."""
    body = json.dumps({"order_id": order_id, "amount": amount})
    page.type_into(f"{operation} textarea.body-param__text", body)
    # Clear shows the answer of an earlier Execute no more: what is waited for is this one's.
    page.evaluate(f"document.querySelector('{operation} .btn-clear')?.click()")
    page.wait_for(
        f"document.querySelector('{operation} .live-responses-table') === null",
        what="the earlier answer cleared",
    )
    page.click(f"{operation} .execute")
    status: str = page.wait_for(
        f"document.querySelector('{operation} .live-responses-table tbody .response-col_status')"
        "?.textContent.trim()",
        what="the answer to Execute",
    )
    return status


def test_with_keys_on_a_reader_authorizes_and_pays_from_the_page(
    page: Page, keyed_service: KeyedService, clean_database: Engine, screenshots: Path
) -> None:
    base_url = keyed_service.service.base_url
    [pay] = [o for o in operations(base_url) if (o["method"], o["path"]) == ("POST", "/pay")]
    operation = f"#operations-{pay['tag']}-{pay['id']}"
    (order_id,) = add_orders(clean_database, "19.99")

    redoc_status = page.open(f"{base_url}/redoc")
    docs_status = page.open(f"{base_url}/docs")
    page.click(f"{operation} .opblock-summary-control")
    page.click(f"{operation} .try-out__btn")
    without_key = execute_pay(page, operation, order_id, "19.99")
    unpaid = stored_order(clean_database, order_id).status
    page.click(".btn.authorize")
    page.type_into("#auth-bearer-value", keyed_service.keys[1])
    page.click(".auth-btn-wrapper .authorize")
    page.click(".auth-btn-wrapper .btn-done")
    with_key = execute_pay(page, operation, order_id, "19.99")
    answer = page.evaluate(
        f"document.querySelector('{operation} .live-responses-table tbody .microlight').textContent"
    )
    page.screenshot(screenshots / "docs-tried.png")

    assert (redoc_status, docs_status) == (200, 200)
    assert (without_key, unpaid) == ("401", "pending")
    assert with_key == "200", answer
    assert json.loads(answer)["order_id"] == order_id
    assert stored_order(clean_database, order_id).status == "paid"
    assert_only_the_service_was_asked(page, base_url)
