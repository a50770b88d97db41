"""The try-it page: `GET /` and the few static files it loads, all shipped inside the package.

Served by explicit routes rather than a `StaticFiles` mount so that the whole page travels in
this one router (`include_router` does not carry mounts) and only plain file names in
`app/static/` with a known type can be read: no sub-folders, no dot files, no `..`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC_DIR: Final = Path(__file__).resolve().parents[2] / "static"

_MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_SAFE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9]+)+")
# Revalidate every time (FileResponse sends ETag and Last-Modified), so a new release of the
# page is never mixed with a cached old script.
_HEADERS: Final = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

router = APIRouter(include_in_schema=False)


def _static_file(name: str) -> FileResponse:
    media_type = _MEDIA_TYPES.get(Path(name).suffix.lower())
    path = STATIC_DIR / name
    if media_type is None or not _SAFE_NAME.fullmatch(name) or not path.is_file():
        raise HTTPException(status_code=404, detail=f"no static file named {name!r}")
    return FileResponse(path, media_type=media_type, headers=_HEADERS)


@router.get("/")
async def index_page() -> FileResponse:
    """The page to draw or drop a digit, pick a number and see the model's answer."""
    return _static_file("index.html")


@router.get("/static/{name}")
async def static_file(name: str) -> FileResponse:
    """One file of the page (script, style sheet, icon) from `app/static/`."""
    return _static_file(name)
