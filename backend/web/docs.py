"""The API docs page (`/schema/swagger`) served whole by this process.

Swagger UI's assets come from the `swagger-ui-bundle-v2` package, not from a CDN, so the page works offline and
behind a strict firewall.
"""

from __future__ import annotations

from pathlib import Path

from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

from backend.web.routes import reject_unservable_path

DOCS_ASSETS_PATH = "/schema-assets"
DOCS_ASSETS_DIR = Path(str(swagger_ui_path))


def swagger_plugin() -> SwaggerRenderPlugin:
    """Litestar's Swagger UI page, pointed at the bundled assets (and a bundled favicon)."""
    return SwaggerRenderPlugin(
        js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{DOCS_ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{DOCS_ASSETS_PATH}/favicon-32x32.png'>",
    )


def docs_assets_router() -> Router:
    """The Swagger UI files, public like the docs page itself."""
    return create_static_files_router(
        path=DOCS_ASSETS_PATH,
        directories=[DOCS_ASSETS_DIR],
        include_in_schema=False,
        opt={"exclude_from_auth": True},
        before_request=reject_unservable_path,
    )
