"""The dashboard's static build (`dashboard/dist`, Vite's output) served at `/`.

`/assets/*` are Vite's content-hashed files: cached for a year. Every other path that is not
the API's and has no dot in its last segment is a page of the app's own routing and gets
`index.html` (never cached, so a new build is picked up at the next load). The page may load
only from this origin (Content-Security-Policy) and may not be framed. With no build present,
`/` answers 503 saying how to make one; the API works without it.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.response import File
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

__all__ = ["API_PREFIXES", "static_handlers"]

# Paths that belong to the API: a miss there is the API's 404, never the app's page.
API_PREFIXES = ("api/", "ws", "health/", "schema", "metrics")

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def static_handlers(dist: Path) -> list[HTTPRouteHandler | Router]:
    """Route handlers serving the build in `dist` (index.html for the app's pages)."""
    index = dist / "index.html"

    def page() -> Response[str] | File:
        if not index.is_file():
            return Response(
                f"The dashboard is not built ({dist} has no index.html): run "
                "`bash scripts/setup.sh`, or `npm ci && npm run build` in dashboard/. "
                "The API is at /api/v1 (see /schema).\n",
                status_code=HTTP_503_SERVICE_UNAVAILABLE,
                media_type="text/plain",
                headers={"Cache-Control": "no-store"},
            )
        return File(
            index, content_disposition_type="inline", media_type="text/html",
            headers={**_HEADERS, "Cache-Control": "no-cache"},
        )

    @get("/", include_in_schema=False, sync_to_thread=False)
    def root() -> Response[str] | File:
        return page()

    @get("/{path:path}", include_in_schema=False, sync_to_thread=False)
    def app_page(path: FromPath[str]) -> Response[str] | File:
        relative = path.lstrip("/")
        if relative.startswith(API_PREFIXES):
            raise NotFoundException()
        if "." not in relative.rsplit("/", 1)[-1]:
            return page()  # one of the app's own pages
        target = dist / relative
        if "/" in relative or not target.is_file():  # only the build's top-level files
            raise NotFoundException()
        return File(target, content_disposition_type="inline", headers=_HEADERS)

    assets: Router = create_static_files_router(
        path="/assets",
        directories=[dist / "assets"],
        cache_control=CacheControlHeader(max_age=31_536_000, public=True),
        name="dashboard-assets",
        include_in_schema=False,
    )
    return [root, app_page, assets]
