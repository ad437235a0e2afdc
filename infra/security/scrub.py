"""The one scrubber: every error text bound for a record, an event or a log passes here.

Two things are removed: the secret values of the agent or tool at work (its API key,
its sealed header and env values), and anything shaped like a common credential,
whoever it belongs to (``sk-...`` provider keys, Keel's ``keel_...`` API keys, JWTs,
the token after ``Bearer``, a URL's ``?ticket=``, ``?token=`` or ``?api_key=``), since
a model server, a tool or a library's log line may hold one we do not know.

The secrets of the work in progress are also kept in a context variable
(``scrubbing``, ``keep_secret``), so the log pipeline removes them from every line written while an
activity holds them, even from lines logged by libraries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

MASK = "***"
# Shorter values are not masked: replacing "1" everywhere would garble every text.
MIN_SECRET_CHARS = 4

_SHAPES = re.compile(
    r"sk-[A-Za-z0-9_\-]{12,}"  # OpenAI-style provider keys (sk-..., sk-proj-...)
    r"|keel_[A-Za-z0-9_\-]{20,}"  # Keel API keys
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"  # JWTs
)
_BEARER = re.compile(r"\b(Bearer|bearer|BEARER)(\s+)[A-Za-z0-9._~+/=\-]{8,}")
# A credential in a URL's query: uvicorn logs a WebSocket's request line with its query,
# and a browser's socket brings its single-use ticket there (``?ticket=``).
_QUERY_CREDENTIAL = re.compile(
    r"([?&](?:ticket|token|access_token|api_key|apikey|key|password|secret)=)[^&\s\"'#]+",
    re.IGNORECASE,
)

_in_scope: ContextVar[tuple[str, ...]] = ContextVar("keel_secrets_in_scope", default=())


def _usable(secrets: Iterable[str | None]) -> list[str]:
    # Longest first, so a secret that contains another is masked whole.
    kept = {s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}
    return sorted(kept, key=len, reverse=True)


def scrub_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with the given secrets, those in scope and every credential shape masked."""
    in_scope = _in_scope.get()
    if secrets or in_scope:  # most texts (every log line outside an activity) have none
        for secret in _usable([*secrets, *in_scope]):
            text = text.replace(secret, MASK)
    text = _SHAPES.sub(MASK, text)
    text = _QUERY_CREDENTIAL.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def scrub(value: Any, secrets: Iterable[str | None] = ()) -> Any:
    """``value`` with every string in it (lists, dicts and their keys) scrubbed."""
    listed = list(secrets)
    if isinstance(value, str):
        return scrub_text(value, listed)
    if isinstance(value, list | tuple):
        return [scrub(v, listed) for v in value]
    if isinstance(value, dict):
        return {scrub(k, listed): scrub(v, listed) for k, v in value.items()}
    return value


@contextmanager
def scrubbing(secrets: Iterable[str | None] = ()) -> Iterator[None]:
    """While inside, ``scrub_text`` (and so every log line) also masks ``secrets`` and
    those named later with ``keep_secret``."""
    token = _in_scope.set((*_in_scope.get(), *_usable(secrets)))
    try:
        yield
    finally:
        _in_scope.reset(token)


def keep_secret(*secrets: str | None) -> None:
    """Mask ``secrets`` too until the enclosing ``scrubbing`` block ends."""
    _in_scope.set((*_in_scope.get(), *_usable(secrets)))
