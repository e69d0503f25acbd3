"""The connection store: PCIDs, encryption at rest, tenants, unique names, removal."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from calhooks.service.calcom.client import Credentials
from calhooks.service.connections.store import (
    NAMES_KEY,
    RECORDS_KEY,
    ConnectionStore,
    ConnectionStoreError,
)
from calhooks.service.core.secretbox import SecretBox, generate_key
from calhooks.service.core.settings import Settings

KEY = "cal_live_0123456789abcdef0123456789"


async def raw(reply: Awaitable[Any] | Any) -> Any:
    """Await a redis-py reply (typed as maybe-awaitable) for a look at what Redis holds."""
    return await cast(Awaitable[Any], reply)


@pytest.fixture
def box_key() -> str:
    return generate_key()


@pytest.fixture
def store(redis_client: aioredis.Redis, box_key: str) -> ConnectionStore:
    return ConnectionStore(redis_client, SecretBox(box_key))


async def test_add_returns_a_random_pcid_and_get_gives_the_credentials_back(
    store: ConnectionStore,
) -> None:
    """A connection comes back from its PCID with the same credentials and metadata."""
    info = await store.add(
        "acme", Credentials(api_key=KEY), org_id=7, base_url="https://cal.example.com/"
    )
    assert uuid.UUID(info.pcid).version == 4
    found = await store.get(info.pcid, tenant="default")
    assert found is not None
    assert found.info == info
    assert found.credentials == Credentials(api_key=KEY)
    assert (info.name, info.tenant, info.auth, info.org_id, info.base_url) == (
        "acme",
        "default",
        "api_key",
        7,
        "https://cal.example.com",
    )
    second = await store.add("other", Credentials(api_key=KEY))
    assert second.pcid != info.pcid


async def test_keys_are_encrypted_at_rest(
    store: ConnectionStore, redis_client: aioredis.Redis
) -> None:
    """Neither the API key nor a platform client secret appears in what Redis holds."""
    api = await store.add("api", Credentials(api_key=KEY))
    platform = await store.add(
        "platform", Credentials(client_id="client-1", client_secret="very-secret-value-123")
    )
    dump = b"".join(
        [
            *(await raw(redis_client.hgetall(RECORDS_KEY))).values(),
            *(await raw(redis_client.hgetall(NAMES_KEY))).values(),
        ]
    )
    assert KEY.encode() not in dump
    assert b"very-secret-value-123" not in dump
    record = json.loads((await raw(redis_client.hget(RECORDS_KEY, platform.pcid))) or b"{}")
    assert record["auth"] == "platform_client"
    assert set(record) == {
        "v",
        "pcid",
        "name",
        "tenant",
        "auth",
        "org_id",
        "base_url",
        "created_at",
        "secret",
    }
    found = await store.get(api.pcid, tenant=None)
    assert found is not None
    assert found.credentials.api_key == KEY


async def test_tenants_only_see_their_own_connections(store: ConnectionStore) -> None:
    """Another tenant's PCID reads as unknown; ``tenant=None`` (stdio, CLI) sees all."""
    mine = await store.add("acme", Credentials(api_key=KEY), tenant="blue")
    assert await store.get(mine.pcid, tenant="green") is None
    assert await store.get(mine.pcid, tenant="blue") is not None
    assert await store.get(mine.pcid, tenant=None) is not None
    assert await store.get("no-such-pcid", tenant=None) is None


async def test_names_are_unique_within_a_tenant_only(store: ConnectionStore) -> None:
    """A second ``acme`` in the same tenant is refused; in another tenant it is fine."""
    await store.add("acme", Credentials(api_key=KEY))
    with pytest.raises(ConnectionStoreError, match="already has a connection named 'acme'"):
        await store.add("acme", Credentials(api_key=KEY))
    await store.add("acme", Credentials(api_key=KEY), tenant="other")
    listed = await store.connections()
    assert [(i.tenant, i.name) for i in listed] == [("default", "acme"), ("other", "acme")]
    assert [i.tenant for i in await store.connections("other")] == ["other"]


async def test_find_by_pcid_or_name_and_remove_frees_the_name(
    store: ConnectionStore, redis_client: aioredis.Redis
) -> None:
    """``find`` takes a PCID or a name; ``remove`` deletes record and name together."""
    info = await store.add("acme", Credentials(api_key=KEY))
    by_name = await store.find("acme")
    by_pcid = await store.find(info.pcid)
    assert by_name is not None
    assert by_pcid is not None
    assert by_name.info == by_pcid.info == info
    assert await store.find("acme", tenant="other") is None
    assert await store.remove(info.pcid) is True
    assert await store.remove(info.pcid) is False
    assert await store.get(info.pcid, tenant=None) is None
    assert await raw(redis_client.hlen(NAMES_KEY)) == 0
    again = await store.add("acme", Credentials(api_key=KEY))
    assert again.pcid != info.pcid


async def test_a_wrong_encryption_key_is_a_clear_error_but_listing_still_works(
    redis_client: aioredis.Redis, store: ConnectionStore
) -> None:
    """Listing never decrypts; reading credentials with the wrong key says so."""
    info = await store.add("acme", Credentials(api_key=KEY))
    wrong = ConnectionStore(redis_client, SecretBox(generate_key()))
    assert [i.pcid for i in await wrong.connections()] == [info.pcid]
    with pytest.raises(ConnectionStoreError, match="wrong CALHOOKS_ENCRYPTION_KEY"):
        await wrong.get(info.pcid, tenant=None)


async def test_a_rotated_key_still_reads_old_connections(
    redis_client: aioredis.Redis, store: ConnectionStore, box_key: str
) -> None:
    """With ``new,old`` keys, connections sealed under the old key still open."""
    info = await store.add("acme", Credentials(api_key=KEY))
    rotated = ConnectionStore(redis_client, SecretBox(f"{generate_key()},{box_key}"))
    found = await rotated.get(info.pcid, tenant=None)
    assert found is not None
    assert found.credentials.api_key == KEY


async def test_credentials_moved_to_another_record_are_refused(
    store: ConnectionStore, redis_client: aioredis.Redis
) -> None:
    """A sealed secret copied into another tenant's record does not open there."""
    victim = await store.add("victim", Credentials(api_key=KEY), tenant="blue")
    thief = await store.add("thief", Credentials(api_key="cal_live_thief000000"), tenant="red")
    victim_record = json.loads((await raw(redis_client.hget(RECORDS_KEY, victim.pcid))) or b"{}")
    thief_record = json.loads((await raw(redis_client.hget(RECORDS_KEY, thief.pcid))) or b"{}")
    thief_record["secret"] = victim_record["secret"]
    await raw(redis_client.hset(RECORDS_KEY, thief.pcid, json.dumps(thief_record)))
    with pytest.raises(ConnectionStoreError, match="sealed for another connection"):
        await store.get(thief.pcid, tenant="red")


@pytest.mark.parametrize(
    ("name", "credentials", "options", "message"),
    [
        ("x", Credentials(), {}, "needs an API key or a platform client"),
        ("x", Credentials(client_id="only-id"), {}, "needs an API key or a platform client"),
        ("x", Credentials(api_key=KEY, client_id="a", client_secret="b"), {}, "not both"),
        ("x", Credentials(api_key="cal live"), {}, "contains spaces"),
        ("", Credentials(api_key=KEY), {}, "connection names are"),
        ("x", Credentials(api_key=KEY), {"org_id": 0}, "positive integer"),
        ("x", Credentials(api_key=KEY), {"base_url": "ftp://cal"}, "http"),
        ("x", Credentials(api_key=KEY), {"base_url": "https://api.cal.com/v2"}, "/v2"),
        ("x", Credentials(api_key=KEY), {"base_url": "https://u:p@cal.example"}, "credentials"),
        ("x", Credentials(api_key=KEY), {"tenant": "bad tenant"}, "invalid tenant name"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_stored(
    store: ConnectionStore,
    redis_client: aioredis.Redis,
    name: str,
    credentials: Credentials,
    options: dict[str, object],
    message: str,
) -> None:
    """Each kind of bad input gets its own message and leaves Redis empty."""
    with pytest.raises(ConnectionStoreError, match=message):
        await store.add(name, credentials, **options)  # type: ignore[arg-type]
    assert await redis_client.exists(RECORDS_KEY, NAMES_KEY) == 0


def test_the_store_needs_an_encryption_key(redis_client: aioredis.Redis) -> None:
    """Without CALHOOKS_ENCRYPTION_KEY the store refuses to start, saying how to make one."""
    with pytest.raises(ConnectionStoreError, match="calhooks keygen"):
        ConnectionStore.from_settings(Settings(_env_file=None), redis_client)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("base_url", "https://attacker.example"),
        ("base_url", None),
        ("org_id", 666),
        ("auth", "platform_client"),
    ],
)
async def test_plain_fields_altered_in_redis_are_refused(
    store: ConnectionStore, redis_client: aioredis.Redis, field: str, value: object
) -> None:
    """Whoever writes to Redis cannot send a decrypted key to a host (or org) of their choosing."""
    info = await store.add(
        "acme", Credentials(api_key=KEY), org_id=1, base_url="https://api.cal.com"
    )
    record = json.loads(await raw(redis_client.hget(RECORDS_KEY, info.pcid)))
    assert record["v"] == 2
    record[field] = value
    await raw(redis_client.hset(RECORDS_KEY, info.pcid, json.dumps(record)))
    with pytest.raises(ConnectionStoreError, match=f"altered in Redis \\({field} differ"):
        await store.get(info.pcid, tenant=None)


async def _version_one(
    store: ConnectionStore, redis_client: aioredis.Redis, box: SecretBox, name: str
) -> str:
    """A connection as version 1 stored it: only the PCID and tenant sealed."""
    info = await store.add(name, Credentials(api_key=KEY), org_id=7, base_url="https://cal.example")
    record = json.loads(await raw(redis_client.hget(RECORDS_KEY, info.pcid)))
    record["v"] = 1
    record["secret"] = box.encrypt(
        json.dumps({"pcid": info.pcid, "tenant": info.tenant, "api_key": KEY})
    )
    await raw(redis_client.hset(RECORDS_KEY, info.pcid, json.dumps(record)))
    return info.pcid


async def test_version_one_records_are_read_then_rewritten_sealed_whole(
    store: ConnectionStore, redis_client: aioredis.Redis, box_key: str
) -> None:
    pcid = await _version_one(store, redis_client, SecretBox(box_key), "old")
    found = await store.get(pcid, tenant=None)
    assert found is not None
    assert (found.credentials.api_key, found.info.org_id) == (KEY, 7)
    record = json.loads(await raw(redis_client.hget(RECORDS_KEY, pcid)))
    assert record["v"] == 2
    record["base_url"] = "https://attacker.example"
    await raw(redis_client.hset(RECORDS_KEY, pcid, json.dumps(record)))
    with pytest.raises(ConnectionStoreError, match="altered in Redis"):
        await store.get(pcid, tenant=None)


async def test_migrate_rewrites_every_version_one_record(
    store: ConnectionStore, redis_client: aioredis.Redis, box_key: str
) -> None:
    box = SecretBox(box_key)
    old = [await _version_one(store, redis_client, box, f"old-{i}") for i in range(3)]
    await store.add("new", Credentials(api_key=KEY))
    assert await store.migrate() == 3
    assert await store.migrate() == 0
    for pcid in old:
        record = json.loads(await raw(redis_client.hget(RECORDS_KEY, pcid)))
        assert record["v"] == 2
        assert KEY not in json.dumps(record)
        sealed = json.loads(box.decrypt(record["secret"]))
        assert (sealed["base_url"], sealed["org_id"]) == ("https://cal.example", 7)
