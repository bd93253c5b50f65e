"""Tenants and their API keys: created once, stored as a hash, resolved to a `Principal`."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cachetools import TTLCache
from sqlalchemy import (
    select,
    update,
)
from sqlalchemy.orm import Session

from engine.db.database import Database, new_id, utcnow
from engine.db.tables import (
    ApiKey,
    Tenant,
)
from engine.jobs.events import ANY, KEY, TENANT, Change, record


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from the API key, never from the request body."""

    tenant_id: str
    tenant_name: str
    key_id: str
    scopes: frozenset[str]
    rate_limit_write: str | None = None
    rate_limit_read: str | None = None


def hash_key(token: str) -> str:
    """API keys are stored as sha256; they are 32 random bytes, so no slow hash is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


# ---- tenants and keys -------------------------------------------------------------------


def ensure_tenant(s: Session, name: str) -> Tenant:
    """The tenant with this name, created if new."""
    t = s.scalar(select(Tenant).where(Tenant.name == name))
    if t is None:
        t = Tenant(id=new_id("ten"), name=name, created_at=utcnow(), submit_seq=0)
        s.add(t)
        s.flush()
    return t


def create_key(
    s: Session, tenant_name: str, scopes: Sequence[str] = ("jobs",)
) -> tuple[str, ApiKey]:
    """Create an API key; the token is returned once and only its hash is kept."""
    tenant = ensure_tenant(s, tenant_name)
    token = "sk_" + secrets.token_urlsafe(32)
    key = ApiKey(
        id=new_id("key"),
        tenant_id=tenant.id,
        prefix=token[:10],
        key_hash=hash_key(token),
        scopes=" ".join(sorted(set(scopes))),
        created_at=utcnow(),
    )
    s.add(key)
    s.flush()
    return token, key


def set_tenant_rate_limits(
    s: Session, tenant_name: str, write: str | None, read: str | None
) -> Tenant:
    """Set (or with None, clear back to the defaults) a tenant's rate limits."""
    tenant = ensure_tenant(s, tenant_name)
    tenant.rate_limit_write = write
    tenant.rate_limit_read = read
    s.flush()
    record(s, Change(TENANT, tenant.id))
    return tenant


def list_keys(s: Session, tenant_name: str | None = None) -> list[tuple[ApiKey, Tenant]]:
    """Keys with their tenants, newest first."""
    q = select(ApiKey, Tenant).join(Tenant, Tenant.id == ApiKey.tenant_id)
    if tenant_name:
        q = q.where(Tenant.name == tenant_name)
    return [(k, t) for k, t in s.execute(q.order_by(ApiKey.created_at.desc())).all()]


def revoke_key(s: Session, key_id: str) -> bool:
    """Revoke a key by id; False if there is no such active key."""
    r = s.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    revoked = bool(r.rowcount)  # type: ignore[attr-defined]
    if revoked:
        record(s, Change(KEY, key_id))
    return revoked


def resolve_key(s: Session, token: str) -> Principal | None:
    """The principal for a bearer token, or None (unknown or revoked)."""
    digest = hash_key(token)
    row = s.execute(
        select(ApiKey, Tenant)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == digest)
    ).first()
    if row is None:
        return None
    key, tenant = row
    # The lookup is by hash; compare again in constant time so timing says nothing.
    if not hmac.compare_digest(key.key_hash, digest) or key.revoked_at is not None:
        return None
    return Principal(
        tenant.id,
        tenant.name,
        key.id,
        frozenset(key.scopes.split()),
        tenant.rate_limit_write,
        tenant.rate_limit_read,
    )


class KeyCache:
    """Bearer tokens resolved to principals, kept for `ttl_s` in this process.

    A revoked key, or a tenant whose limits changed, is dropped as soon as the change feed says
    so (at once in this process, within the periodic check elsewhere, which on PostgreSQL and
    Redis is only the net under `LISTEN`/pub-sub); `ttl_s` bounds anything else. Unknown
    tokens are not cached: a key created a moment ago works at once.
    """

    def __init__(self, db: Database, ttl_s: float = 30.0, maxsize: int = 10_000) -> None:
        self.db = db
        self._cache: TTLCache[str, Principal] = TTLCache(maxsize=maxsize, ttl=ttl_s)
        self.lookups = 0  # database lookups made (for tests)

    async def resolve(self, token: str) -> Principal | None:
        """The principal for a token: from the cache, or one database read."""
        digest = hash_key(token)
        hit = self._cache.get(digest)
        if hit is not None:
            return hit
        self.lookups += 1
        principal = await self.db.read(resolve_key, token)
        if principal is not None:
            self._cache[digest] = principal
        return principal

    def drop(self, change: Change) -> None:
        """Forget what a change makes stale."""
        if change.id == ANY:  # a resync: something may have been missed
            stale = list(self._cache)
        elif change.topic == KEY:
            stale = [d for d, p in self._cache.items() if p.key_id == change.id]
        elif change.topic == TENANT:
            stale = [d for d, p in self._cache.items() if p.tenant_id == change.id]
        else:
            stale = []
        for d in stale:
            self._cache.pop(d, None)

    def follow(self) -> None:
        """Drop entries as key and tenant changes arrive."""
        self.db.events.on(KEY, self.drop)
        self.db.events.on(TENANT, self.drop)
