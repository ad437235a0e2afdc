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

from infra.security.scrub import scrub, scrub_text

SECRET_KEY_PARTS = ("api_key", "apikey", "authorization", "password", "secret", "token")
MASK = "***"


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: MASK if _looks_secret(k) and v not in (None, "") else _mask(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    return value


@lru_cache(maxsize=4096)
def _looks_secret(key: object) -> bool:
    lowered = str(key).lower()
    # Token counts are not secrets.
    if lowered.endswith("_tokens") or lowered == "tokens":
        return False
    return any(part in lowered for part in SECRET_KEY_PARTS)


def mask_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key == "event":
            continue
        if _looks_secret(key):
            event_dict[key] = MASK
        else:
            event_dict[key] = _mask(event_dict[key])
    return event_dict


def scrub_credentials(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Every text of the line through the one scrubber (infra.security.scrub): the
    secrets of the work in progress and anything shaped like a credential."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = scrub_text(value)
        elif isinstance(value, dict | list | tuple):
            event_dict[key] = scrub(value)
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library through one JSON renderer."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        mask_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            scrub_credentials,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrub_credentials,
            renderer,
        ],
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
