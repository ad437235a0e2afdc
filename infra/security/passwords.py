"""Password hashing: argon2id through pwdlib, with its recommended parameters."""

from __future__ import annotations

from functools import lru_cache

from pwdlib import PasswordHash

# Checked against when the user does not exist, so an unknown email takes as long as
# a wrong password (no timing oracle for which emails have accounts).
_UNKNOWN_USER_HASH: str | None = None


@lru_cache(maxsize=1)
def _hasher() -> PasswordHash:
    return PasswordHash.recommended()


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password: str, stored_hash: str | None) -> bool:
    """True when ``password`` matches; with no stored hash, spends the same time and fails."""
    global _UNKNOWN_USER_HASH
    if stored_hash is None:
        if _UNKNOWN_USER_HASH is None:
            _UNKNOWN_USER_HASH = hash_password("unknown user")
        _hasher().verify(password, _UNKNOWN_USER_HASH)
        return False
    try:
        return _hasher().verify(password, stored_hash)
    except ValueError:  # a malformed stored hash never matches
        return False
