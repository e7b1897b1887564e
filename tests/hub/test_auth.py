"""hub.auth: key parsing, the verification cache and its revocation times, WebSocket tickets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.auth import ApiKeyAuthenticator, Principal, Role, WsTickets, parse_key
from hub.store import Store, database_url_for


class FakeClock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(database_url_for(tmp_path)) as store:
        yield store


def test_only_well_formed_keys_parse() -> None:
    assert parse_key("etp_12_abc_def-ghi") == (12, "abc_def-ghi")
    for bad in ("", "etp_", "etp_12", "etp_12_", "etp_x_abc", "xyz_12_abc", "etp_-1_abc",
                "etp_１２_abc", "etp_" + "9" * 30 + "_abc", "etp_1_" + "a" * 300):
        assert parse_key(bad) is None, bad


def test_operator_includes_viewer_not_the_other_way() -> None:
    assert Role.OPERATOR.includes(Role.VIEWER) and Role.OPERATOR.includes(Role.OPERATOR)
    assert Role.VIEWER.includes(Role.VIEWER) and not Role.VIEWER.includes(Role.OPERATOR)


async def test_keys_are_checked_against_the_store_through_a_cache(sqlite_store: Store) -> None:
    clock = FakeClock()
    auth = ApiKeyAuthenticator(sqlite_store, cache_ttl_s=5.0, clock=clock)
    issued = await auth.create("ops", Role.OPERATOR)
    principal = await auth.authenticate(issued.key)
    assert principal == Principal(key_id=issued.row.id, name="ops", role=Role.OPERATOR)
    for _ in range(100):
        assert await auth.authenticate(issued.key) == principal
    assert auth.stats["reads"] == 1  # one database read for 101 requests within the TTL

    wrong_secret = issued.key[:-3] + ("aaa" if not issued.key.endswith("aaa") else "bbb")
    assert await auth.authenticate(wrong_secret) is None
    assert await auth.authenticate(None) is None
    assert await auth.authenticate("Bearer nonsense") is None
    assert await auth.authenticate(f"etp_{issued.row.id + 50}_whatever") is None
    await auth.close()
    assert (await sqlite_store.get_api_key(issued.row.id)).last_used_ms is not None  # type: ignore[union-attr]


async def test_revocation_through_the_hub_is_immediate_from_elsewhere_within_the_ttl(
    sqlite_store: Store, tmp_path: Path
) -> None:
    clock = FakeClock()
    auth = ApiKeyAuthenticator(sqlite_store, cache_ttl_s=5.0, clock=clock)
    here = await auth.create("here", Role.VIEWER)
    there = await auth.create("there", Role.VIEWER)
    assert await auth.authenticate(here.key) is not None
    assert await auth.authenticate(there.key) is not None

    await auth.revoke(here.row.id)  # through the hub: refused at once
    assert await auth.authenticate(here.key) is None

    # another process (etp apikey revoke) revokes `there` in the same database
    async with Store(database_url_for(tmp_path)) as other:
        await other.revoke_api_key(there.row.id)
    clock.now += 4.9
    assert await auth.authenticate(there.key) is not None  # still cached
    clock.now += 0.2
    assert await auth.authenticate(there.key) is None  # read again after the TTL: refused
    await auth.close()


def test_a_ticket_redeems_once_within_its_lifetime() -> None:
    clock = FakeClock()
    tickets = WsTickets(30.0, clock=clock)
    viewer = Principal(key_id=3, name="screen", role=Role.VIEWER)
    ticket = tickets.issue(viewer)
    assert len(ticket) >= 43 and tickets.issue(viewer) != ticket
    clock.now += 29.9
    assert tickets.redeem(ticket) == viewer
    assert tickets.redeem(ticket) is None  # single use

    late = tickets.issue(viewer)
    clock.now += 30.0
    assert tickets.redeem(late) is None  # expired
    assert tickets.redeem("never-issued") is None


def test_tickets_of_a_revoked_key_are_dropped_and_their_number_is_bounded() -> None:
    clock = FakeClock()
    tickets = WsTickets(30.0, max_open=3, clock=clock)
    a = Principal(key_id=1, name="a", role=Role.VIEWER)
    b = Principal(key_id=2, name="b", role=Role.VIEWER)
    of_a, of_b = tickets.issue(a), tickets.issue(b)
    tickets.forget_key(1)
    assert tickets.redeem(of_a) is None and tickets.redeem(of_b) == b
    issued = [tickets.issue(a) for _ in range(5)]
    assert len(tickets) == 3
    assert tickets.redeem(issued[0]) is None and tickets.redeem(issued[-1]) == a
