"""The hub serves the dashboard's build at `/` (a build made here, in a temp dir): index.html for
the app's pages, hashed assets cached long, the API's paths never swallowed by the app, a clear
503 when no build exists."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

from tests.hub.helpers import api_key, get_json, hub_settings, running_hub


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def test_build_is_served_with_app_routes_and_api_paths_kept(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>ETP</title><div id=root></div>")
    (dist / "assets" / "index-abc123.js").write_text("console.log('etp')")
    (dist / "favicon.svg").write_text("<svg/>")
    settings = hub_settings(tmp_path, dashboard_dir=dist)
    async with running_hub(settings) as hub:
        base = f"http://127.0.0.1:{settings.http_port}"
        status, headers, body = await asyncio.to_thread(_get, f"{base}/")
        assert status == 200 and b"<title>ETP</title>" in body
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["cache-control"] == "no-cache"
        for page in ("/feed", "/batteries/7"):  # the app's own routes: its page
            assert (await asyncio.to_thread(_get, base + page))[2] == body
        status, headers, body = await asyncio.to_thread(_get, f"{base}/assets/index-abc123.js")
        assert status == 200 and body == b"console.log('etp')"
        assert "max-age=31536000" in headers["cache-control"]
        assert (await asyncio.to_thread(_get, f"{base}/favicon.svg"))[2] == b"<svg/>"
        for missing in ("/assets/nope.js", "/nope.js", "/api/v1/nope", "/health/nope",
                        "/../index.html", "/assets/../../secret"):
            status, _, body = await asyncio.to_thread(_get, base + missing)
            assert status == 404 and b"<title>" not in body, missing
        key = await api_key(hub)
        assert (await asyncio.to_thread(get_json, f"{base}/api/v1/whoami", key))[0] == 200
        assert (await asyncio.to_thread(_get, f"{base}/schema/openapi.json"))[0] == 200


async def test_missing_build_says_how_to_make_it(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, dashboard_dir=tmp_path / "no-build")
    async with running_hub(settings):
        base = f"http://127.0.0.1:{settings.http_port}"
        status, _, body = await asyncio.to_thread(_get, f"{base}/")
        assert status == 503 and b"scripts/setup.sh" in body
        assert (await asyncio.to_thread(_get, f"{base}/health/live"))[0] == 200
