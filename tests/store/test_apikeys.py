"""API keys in the store (SQLite and PostgreSQL): only hashes are kept; revoke; migration 0004."""

import hashlib

import pytest
import sqlalchemy as sa

from hub.auth import Role, issue_api_key, parse_key
from hub.store import InvalidValueError, Store, UnknownApiKeyError


async def test_a_key_is_stored_as_the_hash_of_its_secret_never_the_secret(store: Store):
    issued = await issue_api_key(store, "grafana", Role.VIEWER)
    parsed = parse_key(issued.key)
    assert parsed is not None
    key_id, secret = parsed
    assert key_id == issued.row.id and issued.key.startswith(f"etp_{key_id}_")
    assert len(secret) >= 43  # 32 random bytes, url-safe base64
    assert issued.row.key_hash == hashlib.sha256(secret.encode()).hexdigest()

    async with store.sql.connect() as connection:
        stored = (await connection.execute(sa.text("SELECT * FROM api_keys"))).fetchall()
    assert len(stored) == 1
    assert all(secret not in str(value) for value in stored[0])
    assert dict(stored[0]._mapping)["role"] == "viewer"


async def test_create_list_revoke(store: Store):
    viewer = await issue_api_key(store, "wall screen", Role.VIEWER)
    operator = await issue_api_key(store, "ops", Role.OPERATOR)
    assert viewer.key != operator.key and viewer.row.id != operator.row.id
    listed = await store.list_api_keys()
    assert [(row.name, row.role, row.revoked) for row in listed] == [
        ("wall screen", "viewer", False),
        ("ops", "operator", False),
    ]

    revoked = await store.revoke_api_key(viewer.row.id, revoked_ms=5_000)
    assert revoked.revoked and revoked.revoked_ms == 5_000
    again = await store.revoke_api_key(viewer.row.id, revoked_ms=9_000)
    assert again.revoked_ms == 5_000  # the first revocation stands
    assert [row.name for row in await store.list_api_keys(include_revoked=False)] == ["ops"]
    assert (await store.get_api_key(viewer.row.id)).revoked  # type: ignore[union-attr]

    await store.note_api_key_used(operator.row.id, 7_000)
    assert (await store.get_api_key(operator.row.id)).last_used_ms == 7_000  # type: ignore[union-attr]

    with pytest.raises(UnknownApiKeyError, match="etp apikey list"):
        await store.revoke_api_key(999)
    assert await store.get_api_key(999) is None


async def test_bad_names_and_roles_are_refused(store: Store):
    with pytest.raises(InvalidValueError, match="role must be one of viewer, operator"):
        await store.create_api_key("x", "admin", "0" * 64)
    with pytest.raises(InvalidValueError, match="name"):
        await store.create_api_key("", "viewer", "0" * 64)
    with pytest.raises(InvalidValueError, match="SHA-256"):
        await store.create_api_key("x", "viewer", "not-a-hash")
    with pytest.raises(ValueError):
        await issue_api_key(store, "x", "admin")
    assert await store.list_api_keys() == []


async def test_api_keys_migration_goes_down_to_0003_and_up_again(database_url: str):
    from sqlalchemy.ext.asyncio import create_async_engine

    from hub.store.migrate import downgrade_database, head_revision, upgrade_database

    async with Store(database_url) as store:
        await issue_api_key(store, "before", Role.VIEWER)
    engine = create_async_engine(database_url)

    def table_names(connection: sa.Connection) -> set[str]:
        return set(sa.inspect(connection).get_table_names())

    try:
        assert await downgrade_database(engine, "0003_trade_status") == "0003_trade_status"
        async with engine.connect() as connection:
            assert "api_keys" not in await connection.run_sync(table_names)
        # up to the newest revision (later migrations come after 0004_api_keys)
        assert await upgrade_database(engine) == ("0003_trade_status", head_revision())
        async with engine.connect() as connection:
            assert "api_keys" in await connection.run_sync(table_names)
    finally:
        await engine.dispose()
    async with Store(database_url) as store:
        assert await store.list_api_keys() == []  # keys do not survive a downgrade
