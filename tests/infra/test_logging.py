"""Our lines (structlog's own logger) and libraries' (the standard library) share one
stream and one level; configuring again reaches loggers made before."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from infra.logging import configure_logging, get_logger
from tests.support.logs import remove_stderr_handlers

log = get_logger("keel.test.logging")  # made before any configure_logging, as modules do


@pytest.fixture
def stderr_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    try:
        yield capsys
    finally:
        remove_stderr_handlers()
        logging.getLogger().setLevel(logging.WARNING)


def _read(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(text) for text in capsys.readouterr().err.splitlines()]


def _events(lines: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(line["logger"], line["level"], line["event"]) for line in lines]


def test_the_level_and_the_stream_follow_the_last_configuration(
    stderr_lines: pytest.CaptureFixture[str],
) -> None:
    library = logging.getLogger("some.library")
    configure_logging("WARNING")
    log.info("ours, below the level")
    library.info("theirs, below the level")
    log.warning("ours, at the level", n=1)
    library.warning("theirs, at the level")
    assert _events(_read(stderr_lines)) == [
        ("keel.test.logging", "warning", "ours, at the level"),
        ("some.library", "warning", "theirs, at the level"),
    ]

    configure_logging("DEBUG")
    log.debug("ours, now at the level")
    library.debug("theirs, now at the level")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("ours, failed")
    lines = _read(stderr_lines)
    assert _events(lines) == [
        ("keel.test.logging", "debug", "ours, now at the level"),
        ("some.library", "debug", "theirs, now at the level"),
        ("keel.test.logging", "error", "ours, failed"),
    ]
    assert "RuntimeError: boom" in lines[-1]["exception"]
    assert all(line["timestamp"].endswith("Z") for line in lines)
