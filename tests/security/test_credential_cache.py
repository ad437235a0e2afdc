"""The credential cache (KEEL_CREDENTIAL_CACHE_S): a verified API key or membership is
not queried again for a few seconds. A change made through this process takes effect
at once; one made elsewhere (another replica's write, seen here as a write to the
database outside the app) takes effect within the TTL."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncEngine

from api.caller_cache import CallerCache
from infra.accounts import Caller, Principal
from infra.models import DEFAULT_WORKSPACE_ID, ApiKey, Membership
from infra.security.roles import Role
from infra.security.tokens import issue_access_token
from infra.settings import Settings
from tests.support.accounts import Accounts, bearer
from tests.support.responses import data
from tests.support.settings import app_client

ME = "/api/v1/Auth/me"
# Short, so a test sees an entry go stale; long enough that a request made right after
# the write is still served from the cache.
TINY_TTL_S = 1.0


async def _status_after(
    http: httpx.AsyncClient, token: str, wanted: int, deadline_s: float
) -> tuple[int, float]:
    """Poll ``GET /Auth/me`` until it answers ``wanted`` or the deadline passes: the last
    status and the seconds it took."""
    started = time.monotonic()
    while True:
        status = (await http.get(ME, headers=bearer(token))).status_code
        elapsed = time.monotonic() - started
        if status == wanted or elapsed > deadline_s:
            return status, elapsed
        await asyncio.sleep(0.02)


async def test_a_key_revoked_through_this_process_is_refused_at_once(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    key = await accounts.api_key(Role.VIEWER, name="cached")
    me = data(await client.get(ME, headers=bearer(key)))  # verified, and now cached
    data(await client.get(ME, headers=bearer(key)))
    data(await client.delete(f"/api/v1/ApiKey/{me['principal']['id']}"))
    assert (await client.get(ME, headers=bearer(key))).status_code == 401


async def test_a_key_revoked_elsewhere_is_refused_within_the_ttl(
    settings: Settings, accounts: Accounts, db: AsyncEngine
) -> None:
    key = await accounts.api_key(Role.VIEWER, name="cached")
    tiny = settings.model_copy(update={"credential_cache_s": TINY_TTL_S})
    async with app_client(tiny, key) as http:
        data(await http.get(ME))
        async with db.begin() as conn:  # no ORM session of this app: as another replica
            await conn.execute(update(ApiKey).values(revoked_at=datetime.now(UTC)))
        assert (await http.get(ME)).status_code == 200  # still cached: the documented bound
        status, _ = await _status_after(http, key, 401, deadline_s=TINY_TTL_S + 5)
        assert status == 401


async def test_without_the_cache_a_revocation_elsewhere_is_refused_at_once(
    settings: Settings, accounts: Accounts, db: AsyncEngine
) -> None:
    key = await accounts.api_key(Role.VIEWER, name="uncached")
    async with app_client(settings.model_copy(update={"credential_cache_s": 0}), key) as http:
        data(await http.get(ME))
        async with db.begin() as conn:
            await conn.execute(update(ApiKey).values(revoked_at=datetime.now(UTC)))
        assert (await http.get(ME)).status_code == 401


async def test_a_members_role_change_through_this_process_applies_at_once(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    user_id = await accounts.user("ed@example.com", Role.EDITOR)
    token, _ = issue_access_token(
        accounts.settings.secret_key, user_id, DEFAULT_WORKSPACE_ID, timedelta(minutes=5)
    )
    assert data(await client.get(ME, headers=bearer(token)))["role"] == "editor"
    data(await client.put(f"/api/v1/Workspace/members/{user_id}", json={"role": "viewer"}))
    assert data(await client.get(ME, headers=bearer(token)))["role"] == "viewer"
    data(await client.delete(f"/api/v1/Workspace/members/{user_id}"))
    assert (await client.get(ME, headers=bearer(token))).status_code == 401


async def test_a_member_removed_elsewhere_is_refused_within_the_ttl(
    settings: Settings, accounts: Accounts, db: AsyncEngine
) -> None:
    user_id = await accounts.user("gone@example.com", Role.VIEWER)
    token, _ = issue_access_token(
        settings.secret_key, user_id, DEFAULT_WORKSPACE_ID, timedelta(minutes=5)
    )
    tiny = settings.model_copy(update={"credential_cache_s": TINY_TTL_S})
    async with app_client(tiny, token) as http:
        data(await http.get(ME))
        async with db.begin() as conn:
            await conn.execute(delete(Membership).where(Membership.user_id == user_id))
        status, _ = await _status_after(http, token, 401, deadline_s=TINY_TTL_S + 5)
        assert status == 401


def _caller(principal_id: int) -> Caller:
    return Caller(Principal("api_key", principal_id, "k"), DEFAULT_WORKSPACE_ID, Role.VIEWER)


def test_an_entry_lives_until_the_ttl_or_the_keys_own_expiry() -> None:
    cache = CallerCache(ttl_s=60)
    cache.put("live", _caller(1))
    cache.put("expired", _caller(2), expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert cache.get("live") == _caller(1)
    assert cache.get("expired") is None
    stale = CallerCache(ttl_s=0)  # 0: nothing is remembered
    stale.put("k", _caller(1))
    assert stale.get("k") is None


def test_forget_drops_every_entry_of_a_principal_and_the_cache_is_bounded() -> None:
    cache = CallerCache(ttl_s=60, max_entries=3)
    cache.put("a", _caller(1))
    cache.put("b", _caller(1))
    cache.put("c", _caller(2))
    cache.forget("api_key", 1)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, None, _caller(2))
    for name in "defg":
        cache.put(name, _caller(3))
    assert cache.get("c") is None and cache.get("g") == _caller(3)
