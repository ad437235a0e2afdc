"""What every tool client shares: the outcome shape, retryable errors, argument checks,
secrets revealed right before use and masked in what comes back, long text cut."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from infra.secrets import SecretDecryptionError, decrypt, is_encrypted
from infra.security.scrub import scrub as scrub  # the one scrubber, re-exported for tools
from infra.tools.sealing import SECRET_HEADERS

MAX_RESULT_CHARS = 64_000


@dataclass
class ToolOutcome:
    ok: bool
    output: Any = None
    error: str | None = None
    latency_ms: float = 0.0
    # MCP: the tools the server offers (filled by discovery and by /Tool/{id}/test).
    tools: list[dict[str, Any]] = field(default_factory=list)


class RetryableToolError(Exception):
    """The call may succeed if made again (timeout, 429, 5xx, connection trouble)."""


def argument_errors(schema: dict[str, Any] | None, arguments: dict[str, Any]) -> str | None:
    """A readable list of what is wrong with ``arguments``, or None when they fit."""
    if not schema:
        return None
    errors = sorted(Draft202012Validator(schema).iter_errors(arguments), key=lambda e: e.path)
    if not errors:
        return None
    return "; ".join(
        f"{'/'.join(str(p) for p in e.path) or 'arguments'}: {e.message}" for e in errors[:5]
    )


def reveal(values: dict[str, Any] | None, secret_key: str) -> dict[str, str]:
    """Header or env values as sent: secret ones decrypted, right before use."""
    out: dict[str, str] = {}
    for name, value in (values or {}).items():
        raw = value.get("value", "") if isinstance(value, dict) else value
        out[name] = decrypt(raw, secret_key) if is_encrypted(raw) else str(raw)
    return out


def secret_values(
    values: dict[str, Any] | None, revealed: dict[str, str], *, all_secret: bool
) -> list[str]:
    """The plaintext of the secret entries of a headers/env map (to mask them)."""
    out = []
    for key, raw in (values or {}).items():
        secret = (
            all_secret
            or key.lower() in SECRET_HEADERS
            or (isinstance(raw, dict) and raw.get("secret", True))
        )
        plain = revealed.get(key, "")
        if secret and len(plain) >= 4:  # masking "1" everywhere would garble output
            out.append(plain)
    return out


def config_secrets(config: dict[str, Any], secret_key: str) -> list[str]:
    """The plaintext of every secret header and env value of a tool's config (to scrub
    them from whatever the call's errors and logs say); unreadable ones are skipped."""
    out: list[str] = []
    for name, all_secret in (("headers", False), ("env", True)):
        try:
            revealed = reveal(config.get(name), secret_key)
        except SecretDecryptionError:
            continue
        out += secret_values(config.get(name), revealed, all_secret=all_secret)
    return out


def truncate(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [truncated {len(text) - limit} characters]"


def cut_text(text: str, limit: int, unread: bool = False, total: str | None = None) -> str:
    """``text`` kept to ``limit`` characters, saying it was cut. ``unread``: the source
    had more than ``text`` (``total`` says how much, when known)."""
    if not unread:
        return truncate(text, limit)
    size = f"{total} bytes" if total else f"more than {limit} characters"
    return text[:limit] + f"... [truncated: the response has {size}]"
