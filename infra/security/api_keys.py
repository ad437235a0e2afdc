"""API keys: ``keel_`` and 43 random URL-safe characters (256 bits).

Only a keyed hash (HMAC-SHA256 under a key derived from the server key) is stored,
with the first characters for people to recognise a key in a list. A key is looked
up by its hash, so checking one costs one indexed query and no slow hashing: the
key's entropy, not the hash's cost, is what makes guessing hopeless.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from infra.security.keys import purpose_key

KEY_PREFIX = "keel_"
DISPLAY_CHARS = 12  # "keel_" and 7 random characters
_KEY_SHAPE = re.compile(r"^keel_[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class NewApiKey:
    key: str  # shown once, never stored
    prefix: str
    key_hash: str


def looks_like_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def well_formed(key: str) -> bool:
    return _KEY_SHAPE.match(key) is not None


def hash_api_key(secret_key: str, key: str) -> str:
    return hmac.new(purpose_key(secret_key, "api-key"), key.encode(), hashlib.sha256).hexdigest()


def make_api_key(secret_key: str) -> NewApiKey:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return NewApiKey(key=key, prefix=key[:DISPLAY_CHARS], key_hash=hash_api_key(secret_key, key))
