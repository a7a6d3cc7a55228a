"""/docs and /redoc (SPEC §2): pages whose every script, style and icon the service serves itself
from an installed package, open without an API key while the API itself needs one.

What they look like in a browser, offline, is tested in tests/e2e/test_docs_in_browser.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.entrypoints.http.auth import ApiKeys
from payment.entrypoints.http.docs import ASSETS_PATH, assets_directory
from payment.entrypoints.http.observe import MULTIPROCESS_DIR_VARIABLE, UNMATCHED_ROUTE
from tests.unit.fakes import pending_order, store_with
from tests.unit.http_support import client_on

KEY = "shop-a-0123456789abcdef"
PAGES = ("/docs", "/redoc")
# Every address a page loads from: <script src>, <link href>, and the document's url.
LOADED = re.compile(r"""(?:src|href)="([^"]+)"|url: '([^']+)'|spec-url="([^"]+)\"""")


@pytest.fixture(autouse=True)
def one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics of this process alone, not of workers sharing a folder."""
    monkeypatch.delenv(MULTIPROCESS_DIR_VARIABLE, raising=False)


@pytest.fixture
def store() -> InMemoryStore:
    return store_with(pending_order(order_id=1, total="10.00"))


@pytest.fixture
def client(store: InMemoryStore) -> Iterator[TestClient]:
    with client_on(lambda: InMemoryUnitOfWork(store)) as client:
        yield client


@pytest.fixture
def keyed_client(store: InMemoryStore) -> Iterator[TestClient]:
    with client_on(lambda: InMemoryUnitOfWork(store), api_keys=ApiKeys([KEY])) as client:
        yield client


def loaded_by(html: str) -> list[str]:
    return [next(filter(None, match)) for match in LOADED.findall(html)]


@pytest.mark.parametrize("page", PAGES)
def test_a_page_loads_everything_from_the_service_itself(client: TestClient, page: str) -> None:
    response = client.get(page)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    addresses = loaded_by(response.text)
    assert "/openapi.json" in addresses
    assert [a for a in addresses if a != "/openapi.json"], response.text
    for address in addresses:
        assert address.startswith("/"), f"{page} loads {address} from another host"
        assert not address.startswith("//"), f"{page} loads {address} from another host"
        loaded = client.get(address)
        assert loaded.status_code == 200, address
        assert len(loaded.content) > 0, address
    assert "googleapis" not in response.text
    assert "cdn" not in response.text.lower()


@pytest.mark.parametrize("page", PAGES)
def test_a_page_lets_the_browser_fetch_nothing_from_elsewhere(
    client: TestClient, page: str
) -> None:
    policy = client.get(page).headers["content-security-policy"]

    directives = dict(d.strip().partition(" ")[::2] for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    for name in ("script-src", "style-src", "img-src", "connect-src", "worker-src"):
        sources = directives[name].split()
        assert sources[0] == "'self'", (name, sources)
        assert all(s.startswith("'") or s.endswith(":") for s in sources), (name, sources)


@pytest.mark.parametrize(
    ("asset", "media_type", "marker"),
    [
        ("swagger-ui-bundle.js", "javascript", b"SwaggerUIBundle"),
        ("swagger-ui.css", "text/css", b".swagger-ui"),
        ("redoc.standalone.js", "javascript", b"Redoc"),
    ],
)
def test_the_assets_are_the_packaged_bundles(
    client: TestClient, asset: str, media_type: str, marker: bytes
) -> None:
    response = client.get(f"{ASSETS_PATH}/{asset}")

    assert response.status_code == 200
    assert media_type in response.headers["content-type"]
    assert response.content == (assets_directory() / asset).read_bytes()
    assert marker in response.content


def test_an_asset_outside_the_package_is_not_served(client: TestClient) -> None:
    missing = client.get(f"{ASSETS_PATH}/no-such-file.js")

    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert client.get(f"{ASSETS_PATH}/core.py").status_code == 404
    assert client.get(f"{ASSETS_PATH}/..%2Fcore.py").status_code == 404
    assert client.get(f"{ASSETS_PATH}/../../app.py").status_code == 404


@pytest.mark.parametrize("path", [*PAGES, "/openapi.json", f"{ASSETS_PATH}/swagger-ui.css"])
def test_with_keys_on_the_pages_and_the_document_open_without_one(
    keyed_client: TestClient, path: str
) -> None:
    assert keyed_client.get(path).status_code == 200
    assert keyed_client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 200


@pytest.mark.parametrize(
    "path", ["/docs/", "/docs/pay", "/redoc/x", "/openapi.json/x", "/docs/assetsx/a.js"]
)
def test_with_keys_on_only_those_exact_paths_are_open(keyed_client: TestClient, path: str) -> None:
    assert keyed_client.get(path).status_code == 401


def test_the_document_lets_the_authorize_button_send_a_bearer_key(keyed_client: TestClient) -> None:
    document: dict[str, Any] = keyed_client.get("/openapi.json").json()

    [(name, scheme)] = document["components"]["securitySchemes"].items()
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert {name: []} in document["paths"]["/pay"]["post"].get("security", document["security"])
    assert "/docs" not in document["paths"]
    assert "/redoc" not in document["paths"]


def test_the_pages_are_counted_under_their_own_routes(client: TestClient) -> None:
    client.get("/docs")
    client.get(f"{ASSETS_PATH}/swagger-ui.css")
    client.get("/openapi.json")

    text = client.get("/metrics").text
    routes = {
        sample.labels["route"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "payment_http_requests_total"
    }
    assert {"/docs", f"{ASSETS_PATH}/{{name}}", "/openapi.json"} <= routes
    assert UNMATCHED_ROUTE not in routes
