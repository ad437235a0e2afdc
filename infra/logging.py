"""Structured logging: one JSON object per line, with context bound per request/run.

``request_id``, ``execution_id`` and ``node_id`` are bound with
``structlog.contextvars.bind_contextvars`` where they are known, so every line
logged below carries them. Values under keys that look like secrets are masked
before rendering, so a careless ``log.info(..., headers=headers)`` cannot leak one,
and every text passes the one scrubber (``infra.security.scrub``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from functools import lru_cache
from typing import Any

import structlog

from infra.security.scrub import scrub_text

SECRET_KEY_PARTS = ("api_key", "apikey", "authorization", "password", "secret", "token")
MASK = "***"


@lru_cache(maxsize=4096)
def _looks_secret(key: object) -> bool:
    lowered = str(key).lower()
    # Token counts are not secrets.
    if lowered.endswith("_tokens") or lowered == "tokens":
        return False
    return any(part in lowered for part in SECRET_KEY_PARTS)


def _redacted(value: Any) -> Any:
    """A nested value with its secret-looking keys' values masked and every text scrubbed."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {
            scrub_text(k) if isinstance(k, str) else k: MASK
            if _looks_secret(k) and v not in (None, "")
            else _redacted(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """One pass over a line, after its exception is formatted: values under keys that look
    like secrets are masked, and every text passes the one scrubber (infra.security.scrub):
    the secrets of the work in progress and anything shaped like a credential."""
    for key, value in event_dict.items():
        if key != "event" and _looks_secret(key):
            event_dict[key] = MASK
        elif isinstance(value, str):
            event_dict[key] = scrub_text(value)
        elif isinstance(value, dict | list | tuple):
            event_dict[key] = _redacted(value)
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library through one JSON renderer.

    Each line is redacted once: a structlog line at the end of structlog's chain, a
    standard library line (a library's) at the end of the formatter's pre-chain; the
    formatter itself only renders."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log is replaced by our request log line.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
