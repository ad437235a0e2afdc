"""Credentials verified in the last few seconds, remembered in the API process.

Checking an API key or an access token's membership costs a query on every request;
a busy client presents the same credential many times a second. The cache keeps the
caller a credential stood for for ``ttl_s`` seconds (``KEEL_CREDENTIAL_CACHE_S``):

- a revocation, role change or removal made through this process forgets the
  principal's entries at once, so the next request is checked again: every commit
  that changed an API key, a membership or a user forgets that principal in every
  cache of the process (SQLAlchemy session events, so no write path can miss it);
- one made elsewhere (another replica, a database edit) is
  seen within ``ttl_s``: that is the bound on how long a revoked credential can still
  be used on a replica that verified it just before;
- an API key's own expiry is kept with its entry and honoured to the second.

Bounded (the oldest entries go first), and keyed by the API key's keyed hash or by
the (user, workspace) of a verified token: never by a credential's plaintext.
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import chain
from typing import Any, NamedTuple
from weakref import WeakSet

from sqlalchemy import event
from sqlalchemy.orm import Session

from infra.accounts import Caller
from infra.expiring import Expiring
from infra.models import ApiKey, Membership, User

Principal = tuple[str, int | None]  # (type, id), as in Caller.principal


class _Entry(NamedTuple):
    caller: Caller
    expires_at: datetime | None  # the credential's own expiry


class CallerCache:
    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self._remembered: Expiring[str, _Entry] = Expiring(ttl_s, max_entries)
        _caches.add(self)

    def get(self, key: str) -> Caller | None:
        """The caller remembered for ``key``, if it is still fresh and unexpired."""
        entry = self._remembered.get(key)
        if entry is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= datetime.now(UTC):
            self._remembered.drop(key)
            return None
        return entry.caller

    def put(self, key: str, caller: Caller, expires_at: datetime | None = None) -> None:
        self._remembered.put(key, _Entry(caller, expires_at))

    def forget(self, principal_type: str, principal_id: int | None) -> None:
        """Drop every entry of that principal (its key was revoked, its role changed, it
        was removed from a workspace): its next request is checked against the database."""
        self._remembered.drop_where(
            lambda entry: (
                (entry.caller.principal.type, entry.caller.principal.id)
                == (principal_type, principal_id)
            )
        )

    def clear(self) -> None:
        self._remembered.clear()


# -- forgetting on change -------------------------------------------------------------------

# Every cache of this process (tests run several apps in one): a change is forgotten in all.
_caches: WeakSet[CallerCache] = WeakSet()
_CHANGED = "keel.changed_principals"


def _principal_of(row: object) -> Principal | None:
    if isinstance(row, ApiKey):
        return ("api_key", row.id)
    if isinstance(row, Membership):
        return ("user", row.user_id)
    if isinstance(row, User):
        return ("user", row.id)
    return None


@event.listens_for(Session, "after_flush")
def _note_changes(session: Session, _flush_context: Any) -> None:
    # Still the flush's own dirty and deleted lists here; forgotten once committed, so a
    # request racing the commit cannot put the old state back for a whole TTL.
    for row in chain(session.dirty, session.deleted):
        principal = _principal_of(row)
        if principal is not None:
            session.info.setdefault(_CHANGED, set()).add(principal)


@event.listens_for(Session, "after_commit")
def _forget_changes(session: Session) -> None:
    for principal_type, principal_id in session.info.pop(_CHANGED, ()):
        for cache in list(_caches):
            cache.forget(principal_type, principal_id)


@event.listens_for(Session, "after_rollback")
def _drop_changes(session: Session) -> None:
    session.info.pop(_CHANGED, None)
