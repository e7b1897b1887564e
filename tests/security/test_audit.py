"""The security audit log (hub.security.audit): floods of rejected frames and failed logins
become a few counted events; API keys made and revoked (through the hub or by the CLI in
another process) are events; `etp audit security` and GET /api/v1/audit/security list them;
no secret is in any of them, nor in the hub's log lines."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import typer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from hub.auth import Role
from hub.cli.audit import parse_since
from hub.security.audit import SecurityAudit, WindowedCounts
from hub.transport.broker import parse_mqtt_url
from shared_etp.topics import STATUS, device_topic
from tests.hub.helpers import api_key, get_json, hub_settings, running_hub, wait_for

REPO = Path(__file__).resolve().parents[2]


def _etp(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`etp ...` in another process, on this tree's code."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "ETP_DATA_DIR": str(data_dir)}
    env.pop("ETP_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "hub.cli.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def made_seq(listed: list[dict[str, Any]]) -> int:
    """The highest seq among listed events."""
    return max(row["seq"] for row in listed)


def test_a_flood_of_rejections_is_one_event_per_device_reason_and_10_s() -> None:
    now = [0]
    emitted: list[tuple[int, dict[str, Any]]] = []

    def emit(kind: str, *, device_id: int | None = None, **payload: Any) -> None:
        emitted.append((now[0], {"kind": str(kind), "device_id": device_id, **payload}))

    audit = SecurityAudit(emit, clock=lambda: now[0])
    topic = device_topic("site1", 7, STATUS)
    for step in range(2500):  # 100 per second for 25 s
        now[0] = step * 10
        audit.frame_rejected("bad_tag", topic)
        audit.frame_rejected("oversized", "etp/v1/site1/bess/8/status")
        if step % 100 == 0:
            audit.tick()
    audit.tick(everything=True)  # the hub stopping: the unfinished window's count
    seven = [(t, e) for t, e in emitted if e["device_id"] == 7]
    assert sum(e["count"] for _t, e in seven) == 2500  # every rejection counted once
    assert {e["reason"] for _t, e in seven} == {"bad_tag"}
    assert seven[0][1]["count"] == 1 and seven[0][0] == 0  # the first at once
    assert len(seven) <= 2500 * 10 // 10_000 + 2  # one per 10 s, not one per frame
    times = [t for t, _e in seven]
    assert all(later - earlier >= 10_000 for earlier, later in itertools.pairwise(times[:-1]))
    assert sum(e["count"] for _t, e in emitted if e["device_id"] == 8) == 2500
    assert all(e["window_s"] == 10 for _t, e in emitted)


def test_failed_logins_are_summed_per_client_and_many_clients_stay_bounded() -> None:
    now = [0]
    counts = WindowedCounts(10_000, lambda: now[0], max_keys=3)
    assert counts.note("10.0.0.1", {"reason": "wrong_secret"}, "wrong_secret") == "10.0.0.1"
    assert counts.note("10.0.0.1", {}, "unknown_key") is None  # counted, reported later
    assert counts.note("10.0.0.1", {}, "unknown_key") is None
    for n in range(2, 10):  # addresses beyond max_keys share one overflow key
        counts.note(f"10.0.0.{n}", {"reason": "no_key"}, "no_key")
    assert len(counts) == 4
    now[0] = 10_000
    reports = {key: (count, reasons) for key, count, _d, reasons in counts.due()}
    assert reports["10.0.0.1"] == (2, {"unknown_key": 2})
    assert reports[("overflow", "no_key")] == (5, {"no_key": 5})  # 10.0.0.4 was reported at once
    now[0] = 20_000
    assert counts.due() == [] and len(counts) == 0  # quiet windows close


async def test_the_hub_audits_logins_keys_and_frames_without_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="hub")
    settings = hub_settings(tmp_path, log_level="debug")
    async with running_hub(settings) as hub:
        base = hub.http_url
        operator = await api_key(hub, Role.OPERATOR, name="ops")
        viewer = await api_key(hub, Role.VIEWER, name="screen")

        def call(path: str, key: str | None = None, **kwargs: Any) -> tuple[int, Any]:
            return get_json(base + path, key, **kwargs)

        # an operator makes and revokes a key through the API
        status, made = await asyncio.to_thread(
            call,
            "/api/v1/api-keys",
            operator,
            method="POST",
            body={"name": "robot", "role": "viewer"},
        )
        assert status in (200, 201)
        revoked_id = made["id"]
        assert (
            await asyncio.to_thread(
                call, f"/api/v1/api-keys/{revoked_id}", operator, method="DELETE"
            )
        )[0] == 200
        # an operator action (its existing operator_action event is in the audit too)
        assert (await asyncio.to_thread(call, "/api/v1/trading/pause", operator, method="POST"))[
            0
        ] == 200
        # a brute force: 40 wrong secrets, then the revoked key, unknown ids, no key
        wrong = viewer[:-6] + "AAAAAA"
        for _ in range(40):
            assert (await asyncio.to_thread(call, "/api/v1/status", wrong))[0] == 401
        assert (await asyncio.to_thread(call, "/api/v1/status", made["key"]))[0] == 401
        assert (await asyncio.to_thread(call, "/api/v1/status", "etp_999_nope"))[0] == 401
        assert (await asyncio.to_thread(call, "/api/v1/status"))[0] == 401  # + 1 more below
        # and a WebSocket with a wrong key and one with a used-up ticket
        ws = base.replace("http", "ws", 1) + "/ws"
        with pytest.raises(ConnectionClosed):
            async with connect(ws, additional_headers={"X-API-Key": wrong}) as socket:
                await socket.recv()
        with pytest.raises(ConnectionClosed):
            async with connect(ws + "?ticket=made-up") as socket:
                await socket.recv()
        # garbage frames on battery 5's topic (no such battery: rejected all the same)
        host, port = parse_mqtt_url(hub.mqtt_url)
        async with aiomqtt.Client(host, port, identifier="garbage") as client:
            for n in range(30):
                await client.publish(device_topic(settings.site, 5, STATUS), bytes([n]) * 40)
        await wait_for(lambda: sum(hub.metrics.rejected_frames.values()) >= 30, 10, "rejections")
        await wait_for(lambda: hub.api_keys.stats["refused"] >= 45, 10, "refusals")
        # the first of each is an event at once; the API lists them to operators only
        status, listed = await asyncio.to_thread(call, "/api/v1/audit/security", operator)
        assert status == 200, listed
        kinds = {row["kind"] for row in listed}
        assert {"api_key_created", "api_key_revoked", "login_failed", "frames_rejected"} <= kinds
        assert (await asyncio.to_thread(call, "/api/v1/audit/security", viewer))[0] == 403
        assert (await asyncio.to_thread(call, "/api/v1/audit/security"))[0] == 401
        device_5 = (await asyncio.to_thread(call, "/api/v1/audit/security?device=5", operator))[1]
        assert device_5 and {row["device_id"] for row in device_5} == {5}
        # `etp apikey` in another process: the hub finds its changes in the key table
        assert hub.security_audit is not None
        hub.security_audit.keys_interval_s, hub.security_audit.keys_settle_ms = 0.2, 200
        made_by_cli = await asyncio.to_thread(
            _etp,
            "apikey",
            "create",
            "--name",
            "night-shift",
            "--role",
            "viewer",
            data_dir=tmp_path,
        )
        assert made_by_cli.returncode == 0, made_by_cli.stderr
        cli_key = next(word for word in made_by_cli.stdout.split() if word.startswith("etp_"))
        cli_id = cli_key.split("_")[1]
        revoked_by_cli = await asyncio.to_thread(
            _etp, "apikey", "revoke", cli_id, data_dir=tmp_path
        )
        assert revoked_by_cli.returncode == 0, revoked_by_cli.stderr

        async def key_events(key_id: str) -> list[dict[str, Any]]:
            return [
                e
                for e in await hub.read_events(0, 1000, ["api_key_created", "api_key_revoked"])
                if e["payload"]["key_id"] == f"etp_{key_id}"
            ]

        for _ in range(100):
            if len(await key_events(cli_id)) == 2:
                break
            await asyncio.sleep(0.1)
        cli_events = await key_events(cli_id)
        assert [(e["kind"], e["payload"]["source"]) for e in cli_events] == [
            ("api_key_created", "database"),
            ("api_key_revoked", "database"),
        ]
        assert cli_events[1]["seq"] > cli_events[0]["seq"] > made_seq(listed)  # the hub's seqs
    # after the hub stopped: the CLI lists everything, the unfinished windows' counts too
    listing = _etp("audit", "security", "--json", "--limit", "1000", data_dir=tmp_path)
    assert listing.returncode == 0, listing.stderr
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    logins = [r["payload"] for r in rows if r["kind"] == "login_failed"]
    assert {p["client"] for p in logins} == {"127.0.0.1"}
    assert sum(p["count"] for p in logins) == 46  # every refusal counted once
    reasons: dict[str, int] = {}
    for p in logins:
        for reason, n in p["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    assert reasons == {
        "wrong_secret": 41,
        "revoked_key": 1,
        "unknown_key": 1,
        "no_key": 2,
        "bad_ticket": 1,
    }
    assert len(logins) <= 3  # summed, not one event per attempt
    frames = [r for r in rows if r["kind"] == "frames_rejected" and r["device_id"] == 5]
    assert sum(r["payload"]["count"] for r in frames) == 30 and len(frames) <= 3
    made_by_api = next(
        r["payload"]
        for r in rows
        if r["kind"] == "api_key_created" and r["payload"]["key_id"] == f"etp_{revoked_id}"
    )
    assert made_by_api["name"] == "robot" and made_by_api["source"] == "api"
    assert made_by_api["by"] == {"key_id": "etp_" + operator.split("_")[1], "name": "ops-operator"}
    # a key made while the hub is down is audited when it starts
    made_while_down = _etp(
        "apikey", "create", "--name", "offline", "--role", "operator", data_dir=tmp_path
    )
    assert made_while_down.returncode == 0, made_while_down.stderr
    down_key = next(word for word in made_while_down.stdout.split() if word.startswith("etp_"))
    down_id = down_key.split("_")[1]
    async with running_hub(settings) as hub:
        assert hub.security_audit is not None
        hub.security_audit.keys_interval_s, hub.security_audit.keys_settle_ms = 0.2, 200
        await asyncio.sleep(0.5)
        for _ in range(100):
            if any(
                e["payload"]["key_id"] == f"etp_{down_id}"
                for e in await hub.read_events(0, 1000, ["api_key_created"])
            ):
                break
            await asyncio.sleep(0.1)
        created_again = [
            e["payload"]["key_id"] for e in await hub.read_events(0, 1000, ["api_key_created"])
        ]
    assert created_again.count(f"etp_{down_id}") == 1
    assert created_again.count(f"etp_{cli_id}") == 1  # not audited twice after a restart
    table = _etp("audit", "security", "--since", "1h", data_dir=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = [line for line in table.stdout.splitlines() if f"etp_{cli_id} " in line]
    assert [line.split()[2] for line in lines] == ["api_key_created", "api_key_revoked"]
    assert "night-shift (viewer) by another process (etp apikey)" in lines[0]
    assert "login_failed" in table.stdout and "client 127.0.0.1" in table.stdout
    operator_id = operator.split("_")[1]
    assert f"pause_trading by key etp_{operator_id} (ops-operator)" in table.stdout

    # no secret anywhere: not in the events, the listings, nor the hub's log lines
    everything = "\n".join(
        [listing.stdout, table.stdout, caplog.text, json.dumps(listed), *capsys.readouterr()]
    )
    secrets = [key.split("_", 2)[2] for key in (operator, viewer, made["key"], cli_key, down_key)]
    secrets.append(wrong.split("_", 2)[2])
    secrets.append((tmp_path / "master.key").read_text().strip())
    for secret in secrets:
        assert secret not in everything, f"a secret ({secret[:6]}...) is in the audit or logs"


def test_since_takes_a_duration_or_an_iso_time() -> None:
    now_s = 1_800_000_000.0
    assert parse_since("90s", now_s=now_s) == 1_799_999_910_000
    assert parse_since("2h", now_s=now_s) == 1_799_992_800_000
    assert parse_since("7d", now_s=now_s) == 1_799_395_200_000
    assert parse_since("2026-12-05T13:00:00Z") == parse_since("2026-12-05T14:00:00+01:00")
    assert parse_since("2026-12-05T13:00") == parse_since("2026-12-05T13:00:00Z")  # UTC
    with pytest.raises(typer.BadParameter, match="duration"):
        parse_since("yesterday")
