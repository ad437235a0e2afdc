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
from functools import lru_cache, partial
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger

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


class _LineWriter:
    """structlog's logger for our lines: writes a rendered line to the stream of the
    handler ``configure_logging`` installed, under that handler's lock, so our lines and
    the standard library's share one stream and never interleave.

    Our lines skip the standard library's record, handler chain and formatter: a request's
    log line took 105-120 us of CPU through them, about 50 through this (in process).
    ``name`` is what ``structlog.stdlib.add_logger_name`` reads, as from a stdlib logger."""

    def __init__(self, handler: logging.StreamHandler[Any], name: str | None = None) -> None:
        self.handler = handler
        self.name = name

    def msg(self, line: str) -> None:
        self.handler.acquire()
        try:
            self.handler.stream.write(line + "\n")
            self.handler.flush()
        except (OSError, ValueError):
            # As the standard library's handlers: a log line never fails the caller
            # (a closed or broken stream, as after a test's capture has ended).
            pass
        finally:
            self.handler.release()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route our lines (structlog) and libraries' (the standard library) to one stream,
    each line JSON.

    Each line is redacted once: ours at the end of structlog's chain, a library's at the
    end of the formatter's pre-chain; the formatter itself only renders. Our lines are
    filtered by level before any processor runs, and not cached per logger, so a second
    call (a test's) changes the level and the stream of every logger."""
    handler = logging.StreamHandler(sys.stderr)
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
        processors=[*shared, renderer],
        logger_factory=partial(_LineWriter, handler),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log is replaced by our request log line.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def get_logger(name: str) -> FilteringBoundLogger:
    return structlog.get_logger(name)
