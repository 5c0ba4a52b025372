"""The bundled chat page: static files under `backend/web/static/`, served at `/` with no build step."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.response import File
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_STATIC_PATH_CHARS = 255
# `protocol.d.ts` (the published TypeScript declarations) reads in a browser; the platform's table may map `.ts` to
# MPEG transport streams or Qt translations.
mimetypes.add_type("text/plain", ".ts")  # the longest file name most file systems allow; our files are far shorter


async def reject_unservable_path(request: Request) -> None:  # type: ignore[type-arg]
    """404 for paths no file can have (NUL bytes, over-long names), before the file system raises on them.

    Raises:
        NotFoundException: For such a path.
    """
    path = request.scope["path"]
    if "\x00" in path or len(path) > MAX_STATIC_PATH_CHARS:
        raise NotFoundException()


@get("/", include_in_schema=False, exclude_from_auth=True)
async def index() -> File:
    """The chat page."""
    return File(STATIC_DIR / "index.html", content_disposition_type="inline", media_type="text/html")


@get("/favicon.ico", include_in_schema=False, exclude_from_auth=True)
async def favicon() -> Response[bytes]:
    """No icon; answer 204 so browsers stop asking."""
    return Response(b"", status_code=204)


static_router = create_static_files_router(
    path="/static",
    directories=[STATIC_DIR],
    include_in_schema=False,
    opt={"exclude_from_auth": True},
    before_request=reject_unservable_path,
)
WEB_HANDLERS: list[ControllerRouterHandler] = [index, favicon, static_router]
