"""The API's pages for people: ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with their scripts,
styles and icon served by the service itself from an installed package (fastapi-offline ships
both bundles), never from a CDN. The pages then work where the service runs without internet,
and opening them asks nothing of any other host.

Neither the pages, their assets nor ``/openapi.json`` hold any data, so they are open without
an API key: a reader gets to the Authorize button before holding one (see ``auth.py``). The
document declares the bearer scheme, which Swagger UI's Authorize button fills in.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

SWAGGER_UI_PATH = "/docs"
REDOC_PATH = "/redoc"
ASSETS_PATH = "/docs/assets"
OPENAPI_PATH = "/openapi.json"
ASSETS_PACKAGE = "fastapi_offline"

SWAGGER_UI_SCRIPT = "swagger-ui-bundle.js"
SWAGGER_UI_STYLE = "swagger-ui.css"
REDOC_SCRIPT = "redoc.standalone.js"
ICON = "favicon.png"
ASSETS = {
    SWAGGER_UI_SCRIPT: "text/javascript",
    SWAGGER_UI_STYLE: "text/css",
    REDOC_SCRIPT: "text/javascript",
    ICON: "image/png",
}
"""The only files served from the package, each with its media type."""
ASSET_CACHE = "public, max-age=3600"

_PAGES = frozenset({SWAGGER_UI_PATH, REDOC_PATH, OPENAPI_PATH})

PAGE_POLICY = "; ".join(
    [
        "default-src 'self'",
        # The pages start their bundle with an inline script (Swagger UI) or element (ReDoc).
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        # ReDoc's footer shows a logo from its makers' CDN: refused here, so never fetched.
        "img-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
"""The pages' Content-Security-Policy: whatever the bundles would load from elsewhere, the
browser refuses before asking."""

SWAGGER_UI_PARAMETERS = {
    # Swagger UI would otherwise send the document's address to a validator on the internet.
    "validatorUrl": None,
    # The key entered under Authorize stays for the page's life only, never in local storage.
    "persistAuthorization": False,
    # "Try it out" sends the request; its duration shows next to the answer.
    "displayRequestDuration": True,
}


def is_documentation(path: str) -> bool:
    """Whether ``path`` is one of the pages, the document, or one of their assets."""
    return path in _PAGES or path.startswith(ASSETS_PATH + "/")


def assets_directory() -> Path:
    """Where the installed package keeps the Swagger UI and ReDoc bundles."""
    directory = Path(str(files(ASSETS_PACKAGE) / "static"))
    missing = [name for name in ASSETS if not (directory / name).is_file()]
    if missing:
        raise RuntimeError(f"{ASSETS_PACKAGE} does not ship {', '.join(missing)} in {directory}")
    return directory


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = PAGE_POLICY
    return page


def install_docs(app: FastAPI) -> None:
    """Serve the pages and their assets on ``app``, made with ``docs_url=None`` and
    ``redoc_url=None`` so that FastAPI's own pages, which load from a CDN, are not there."""
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("make the app with docs_url=None and redoc_url=None")
    if app.openapi_url != OPENAPI_PATH:
        raise ValueError(f"the pages read the document at {OPENAPI_PATH}")

    directory = assets_directory()

    async def asset_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            raise HTTPException(status_code=404)  # answered as a not_found problem
        return FileResponse(
            directory / name, media_type=ASSETS[name], headers={"Cache-Control": ASSET_CACHE}
        )

    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS_PATH}/{name}"

    async def swagger_ui(request: Request) -> HTMLResponse:
        return _with_policy(
            get_swagger_ui_html(
                openapi_url=f"{request.scope.get('root_path', '')}{OPENAPI_PATH}",
                title=f"{app.title} - Swagger UI",
                swagger_js_url=asset(request, SWAGGER_UI_SCRIPT),
                swagger_css_url=asset(request, SWAGGER_UI_STYLE),
                swagger_favicon_url=asset(request, ICON),
                oauth2_redirect_url=None,
                swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
            )
        )

    async def redoc(request: Request) -> HTMLResponse:
        return _with_policy(
            get_redoc_html(
                openapi_url=f"{request.scope.get('root_path', '')}{OPENAPI_PATH}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=asset(request, REDOC_SCRIPT),
                redoc_favicon_url=asset(request, ICON),
                with_google_fonts=False,
            )
        )

    # A route per name rather than a mount: only the files above are served, and the metrics
    # label them by this template.
    app.add_route(ASSETS_PATH + "/{name}", asset_file, include_in_schema=False)
    app.add_route(SWAGGER_UI_PATH, swagger_ui, include_in_schema=False)
    app.add_route(REDOC_PATH, redoc, include_in_schema=False)
