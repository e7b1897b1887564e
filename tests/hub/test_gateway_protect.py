"""Abuse limits of the HTTP API against a running hub: request rates per API key and per client
address (429, not spoofable with X-Forwarded-For, probes never limited), and CORS only for the
origins the settings allow."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from hub.auth import Role
from tests.hub.helpers import api_key, get_json, hub_settings, running_hub


def _get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


async def test_rates_are_limited_per_key_and_per_address_not_by_forwarded_headers(
    tmp_path: Path,
) -> None:
    settings = hub_settings(
        tmp_path, http_rate_limit_per_key=8, http_rate_limit_per_address=20
    )
    async with running_hub(settings) as hub:
        base = f"http://127.0.0.1:{settings.http_port}"
        first, second = await api_key(hub, name="a"), await api_key(hub, Role.VIEWER, name="b")

        def burst(key: str, count: int) -> list[int]:
            return [get_json(f"{base}/api/v1/whoami", key)[0] for _ in range(count)]

        answers = await asyncio.to_thread(burst, first, 9)
        assert answers == [200] * 8 + [429]  # the key's budget: 8 a minute
        assert await asyncio.to_thread(burst, second, 8) == [200] * 8  # a key of its own
        # 17 requests from this address so far; the address allows 20 whatever the key
        spoofed = [
            (await asyncio.to_thread(
                _get, f"{base}/api/v1/whoami", {"X-Forwarded-For": f"10.0.0.{n}"}
            ))[0]
            for n in range(5)
        ]
        assert spoofed == [401, 401, 401, 429, 429]  # a forwarded header is not an address
        status, headers = await asyncio.to_thread(_get, f"{base}/api/v1/status", {})
        assert status == 429 and "ratelimit-reset" in {k.lower() for k in headers}
        assert (await asyncio.to_thread(_get, f"{base}/health/live", {}))[0] == 200  # probes


async def test_cors_answers_only_the_allowed_origins(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, http_cors_origins=["https://ops.example"])
    async with running_hub(settings) as hub:
        key = await api_key(hub)
        url = f"http://127.0.0.1:{settings.http_port}/api/v1/whoami"
        auth = {"Authorization": f"Bearer {key}"}
        status, allowed = await asyncio.to_thread(
            _get, url, {**auth, "Origin": "https://ops.example"}
        )
        assert status == 200
        assert allowed.get("access-control-allow-origin") == "https://ops.example"
        status, other = await asyncio.to_thread(_get, url, {**auth, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in {k.lower() for k in other}
