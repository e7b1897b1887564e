"""The running hub's gateway with API keys: 401 / 403 / 200 per role, both headers, whoami,
revocation (through the hub at once; by `etp apikey revoke` in another process within the cache
time), WebSocket tickets, and the security schemes in the OpenAPI schema."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from hub.auth import Role
from tests.hub.helpers import api_key, get_json, hub_settings, running_hub

REPO = Path(__file__).resolve().parents[2]
VIEWER_ROUTES = ("/api/v1/status", "/api/v1/devices", "/api/v1/events", "/api/v1/whoami")


def _challenge(url: str) -> tuple[int, str | None]:
    """Status and WWW-Authenticate header of a request without a key."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers.get("WWW-Authenticate")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("WWW-Authenticate")


async def test_viewer_and_operator_keys_get_what_their_role_allows(tmp_path: Path) -> None:
    async with running_hub(hub_settings(tmp_path)) as hub:
        base = hub.http_url
        viewer = await api_key(hub, Role.VIEWER, name="screen")
        operator = await api_key(hub, Role.OPERATOR, name="ops")

        def call(path: str, key: str | None = None, **kwargs: object) -> tuple[int, object]:
            return get_json(base + path, key, **kwargs)  # type: ignore[arg-type]

        # the probes stay open; everything under /api/v1 needs a key
        assert (await asyncio.to_thread(call, "/health/live"))[0] == 200
        assert (await asyncio.to_thread(call, "/health/ready"))[0] == 200
        for path in VIEWER_ROUTES:
            code, challenge = await asyncio.to_thread(_challenge, base + path)
            assert (code, challenge) == (401, 'Bearer realm="etp"'), path
            code, body = await asyncio.to_thread(call, path, "etp_1_not-the-secret")
            assert code == 401 and "etp apikey create" in body["detail"], path  # type: ignore[index]
            for key in (viewer, operator):
                assert (await asyncio.to_thread(call, path, key))[0] == 200, path
        by_header = await asyncio.to_thread(call, "/api/v1/status", viewer, header="x-api-key")
        assert by_header[0] == 200

        assert await asyncio.to_thread(call, "/api/v1/whoami", viewer) == (
            200, {"id": 1, "name": "screen-viewer", "role": "viewer"}
        )
        code, me = await asyncio.to_thread(call, "/api/v1/whoami", operator, header="x-api-key")
        assert code == 200 and me == {"id": 2, "name": "ops-operator", "role": "operator"}

        # operator routes: 403 for a viewer, 200 for an operator; secrets and hashes never shown
        code, body = await asyncio.to_thread(call, "/api/v1/api-keys", viewer)
        assert code == 403 and "operator" in body["detail"]  # type: ignore[index]
        code, listed = await asyncio.to_thread(call, "/api/v1/api-keys", operator)
        assert code == 200 and [k["name"] for k in listed] == ["screen-viewer", "ops-operator"]  # type: ignore[attr-defined]
        assert "key_hash" not in listed[0] and "key" not in listed[0]  # type: ignore[index]
        assert viewer.split("_", 2)[2] not in str(listed)

        code, made = await asyncio.to_thread(
            call, "/api/v1/api-keys", operator, method="POST",
            body={"name": "laptop", "role": "viewer"},
        )
        assert code == 201 and made["key"].startswith(f"etp_{made['id']}_")  # type: ignore[index]
        code, _ = await asyncio.to_thread(
            call, "/api/v1/api-keys", operator, method="POST", body={"name": "x", "role": "root"}
        )
        assert code == 400
        laptop = made["key"]  # type: ignore[index]
        assert (await asyncio.to_thread(call, "/api/v1/status", laptop))[0] == 200

        # revoked through the hub: refused from the very next request
        code, revoked = await asyncio.to_thread(
            call, f"/api/v1/api-keys/{made['id']}", operator, method="DELETE"  # type: ignore[index]
        )
        assert code == 200 and revoked["revoked_ms"] is not None  # type: ignore[index]
        assert (await asyncio.to_thread(call, "/api/v1/status", laptop))[0] == 401
        code, _ = await asyncio.to_thread(call, "/api/v1/api-keys/999", operator, method="DELETE")
        assert code == 404
        code, _ = await asyncio.to_thread(call, f"/api/v1/api-keys/{1 << 70}", operator,
                                          method="DELETE")
        assert code == 400


async def test_a_websocket_ticket_is_bound_to_the_key_and_redeems_once(tmp_path: Path) -> None:
    async with running_hub(hub_settings(tmp_path)) as hub:
        viewer = await api_key(hub, Role.VIEWER)
        url = hub.http_url + "/api/v1/ws-ticket"
        assert (await asyncio.to_thread(get_json, url, None, method="POST"))[0] == 401
        code, body = await asyncio.to_thread(get_json, url, viewer, method="POST")
        assert code == 201 and body["expires_in_s"] == 30.0
        principal = hub.ws_tickets.redeem(body["ticket"])
        assert principal is not None and principal.name == "test-viewer"
        assert principal.role is Role.VIEWER
        assert hub.ws_tickets.redeem(body["ticket"]) is None


async def test_a_key_revoked_by_the_cli_in_another_process_is_refused_within_the_cache_time(
    tmp_path: Path,
) -> None:
    ttl_s = 2.0
    settings = hub_settings(tmp_path, api_key_cache_ttl_s=ttl_s)
    async with running_hub(settings) as hub:
        viewer = await api_key(hub, Role.VIEWER)
        status = hub.http_url + "/api/v1/status"
        assert (await asyncio.to_thread(get_json, status, viewer))[0] == 200  # now cached
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETP_")}
        revoke = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "hub.cli.main", "apikey", "revoke", "1",
             "--data-dir", str(tmp_path)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
        )
        revoked_at = time.monotonic()
        assert revoke.returncode == 0, revoke.stderr
        assert "revoked API key 1" in revoke.stdout
        while (await asyncio.to_thread(get_json, status, viewer))[0] == 200:
            assert time.monotonic() - revoked_at < ttl_s + 1.0, "still accepted after the TTL"
            await asyncio.sleep(0.1)
        assert (await asyncio.to_thread(get_json, status, viewer))[0] == 401


async def test_the_openapi_schema_declares_the_api_key_schemes(tmp_path: Path) -> None:
    async with running_hub(hub_settings(tmp_path)) as hub:
        code, schema = await asyncio.to_thread(get_json, hub.http_url + "/schema/openapi.json")
        page = await asyncio.to_thread(_challenge, hub.http_url + "/schema")
    assert page == (200, None)  # the rendered schema is open too
    assert code == 200
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["type"] == "http" and schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["apiKeyHeader"] == {
        "type": "apiKey", "name": "X-API-Key", "in": "header",
        "description": "An ETP API key in its own header",
    }
    security = [{"bearerAuth": []}, {"apiKeyHeader": []}]
    for path in ("/api/v1/status", "/api/v1/devices", "/api/v1/events", "/api/v1/whoami"):
        assert schema["paths"][path]["get"]["security"] == security, path
    assert "security" not in schema["paths"]["/health/live"]["get"]
