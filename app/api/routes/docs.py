"""GET /docs (Swagger UI) and /redoc (ReDoc), served whole by the service: no CDN, no network.

FastAPI's own pages load their scripts from a public CDN at an unpinned major version: blank on a
machine without internet access, and a third party's script running on the API's origin. Here
the same pages (FastAPI's `get_swagger_ui_html` / `get_redoc_html`) load the assets that the
pinned `fastapi-offline` package ships (Swagger UI 5.32.6, ReDoc 2.5.3; see docs/architecture.md),
under a Content-Security-Policy that allows nothing from elsewhere. The one inline script of
Swagger UI's page (its set-up) and ReDoc's inline style are allowed by their SHA-256 hashes,
computed from the page as served.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Final

import fastapi_offline
from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS_DIR: Final = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
}
ASSETS_PATH: Final = "/docs/assets"
FAVICON_PATH: Final = "/static/favicon.svg"  # the try-it page's icon (app/api/routes/page.py)

_INLINE: Final = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)
# Swagger UI draws its icons as data: images; ReDoc builds its search index in a blob: worker and
# sets styles from script (styled-components), which CSP counts as inline styles.
_SWAGGER_POLICY: Final = (
    "default-src 'self'; script-src 'self' {scripts}; style-src 'self' {styles}; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_REDOC_POLICY: Final = (
    "default-src 'self'; script-src 'self' {scripts}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS: Final = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

router = APIRouter(include_in_schema=False)


def _hashes(html: str, tag: str) -> str:
    """CSP source expressions allowing exactly the page's inline <tag> blocks."""
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
        for kind, body in _INLINE.findall(html)
        if kind == tag
    )


def _with_policy(page: HTMLResponse, policy: str) -> HTMLResponse:
    html = bytes(page.body).decode()
    page.headers["Content-Security-Policy"] = policy.format(
        scripts=_hashes(html, "script"), styles=_hashes(html, "style")
    )
    page.headers.update(_HEADERS)
    return page


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI: every operation, with "Try it out" against this service."""
    root = request.scope.get("root_path", "")
    page = get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{FAVICON_PATH}",
        oauth2_redirect_url=None,  # no OAuth here
        swagger_ui_parameters=request.app.swagger_ui_parameters,
    )
    return _with_policy(page, _SWAGGER_POLICY)


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc: the same OpenAPI document as one reading page."""
    root = request.scope.get("root_path", "")
    page = get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{FAVICON_PATH}",
        with_google_fonts=False,
    )
    return _with_policy(page, _REDOC_POLICY)


@router.get(ASSETS_PATH + "/{name}")
async def docs_asset(name: str) -> FileResponse:
    """One of the three files the pages load, from the installed fastapi-offline package."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail=f"no documentation asset named {name!r}")
    return FileResponse(ASSETS_DIR / name, media_type=media_type, headers=_HEADERS)
