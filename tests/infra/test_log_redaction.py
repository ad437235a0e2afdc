"""Every log line, ours (structlog) or a library's (standard logging), is redacted once:
secret-looking keys masked, every text (exceptions included) through the scrubber."""

from __future__ import annotations

import json
import logging

import pytest

from infra.logging import configure_logging, get_logger
from infra.security.scrub import keep_secret, scrubbing
from tests.support.logs import remove_stderr_handlers

KEEL_KEY = "keel_" + "a" * 40


def _lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_our_lines_and_library_lines_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    try:
        log = get_logger("keel.test")
        log.info(
            "called",
            token="plain-token-value",
            headers={"Authorization": "Bearer abcdefghijkl", "Accept": "json"},
            note=f"sent {KEEL_KEY}",
            prompt_tokens=12,
        )
        with scrubbing(["Kx9-activity-secret"]):
            keep_secret("Kx9-kept-later")
            logging.getLogger("some.library").info("echo Kx9-activity-secret Kx9-kept-later")
        try:
            raise ValueError(f"failed with {KEEL_KEY}")
        except ValueError:
            logging.getLogger("some.library").exception("library failure")
            log.exception("our failure")
    finally:
        remove_stderr_handlers()
    err = capsys.readouterr().err
    assert KEEL_KEY not in err and "abcdefghijkl" not in err and "plain-token" not in err
    assert "Kx9-" not in err
    called, echoed, library_failure, our_failure = _lines(err)
    assert called["token"] == "***" and called["prompt_tokens"] == 12
    assert called["headers"] == {"Authorization": "***", "Accept": "json"}
    assert called["note"] == "sent ***"
    assert echoed["event"] == "echo *** ***"
    for failure in (library_failure, our_failure):
        assert "ValueError: failed with ***" in failure["exception"]
