"""Secrets at rest: Fernet tokens keyed by ``KEEL_SECRET_KEY``.

The database only ever holds ciphertext for agent API keys, secret tool headers
and MCP env values; they are decrypted inside activities, right before use.
"""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Prefix marks a stored value as ciphertext, so it is never mistaken for plaintext.
CIPHER_PREFIX = "enc:"


class SecretDecryptionError(Exception):
    """The secret was written under another KEEL_SECRET_KEY."""


@lru_cache(maxsize=4)
def _fernet(secret_key: str) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"keel-secrets-v1", info=b"fernet"
    ).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(plaintext: str, secret_key: str) -> str:
    return CIPHER_PREFIX + _fernet(secret_key).encrypt(plaintext.encode()).decode()


def decrypt(stored: str, secret_key: str) -> str:
    if not stored.startswith(CIPHER_PREFIX):
        raise SecretDecryptionError("value is not an encrypted secret")
    try:
        return _fernet(secret_key).decrypt(stored[len(CIPHER_PREFIX) :].encode()).decode()
    except InvalidToken as exc:
        raise SecretDecryptionError(
            "secret cannot be decrypted; was KEEL_SECRET_KEY changed?"
        ) from exc


def is_encrypted(value: object) -> bool:
    return isinstance(value, str) and value.startswith(CIPHER_PREFIX)
