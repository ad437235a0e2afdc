"""Keys derived from ``KEEL_SECRET_KEY``, one per purpose.

Signing tokens and hashing API keys with the same raw key would let a value made for
one purpose pass for the other; each purpose gets its own 32-byte key instead
(HMAC-SHA256 of the purpose under the server key), so rotating the server key
rotates them all.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache


@lru_cache(maxsize=16)
def purpose_key(secret_key: str, purpose: str) -> bytes:
    return hmac.new(secret_key.encode(), f"keel:{purpose}:v1".encode(), hashlib.sha256).digest()
