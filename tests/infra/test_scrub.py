"""The one scrubber: secret values of the work at hand, and credential shapes."""

from __future__ import annotations

from infra.security.scrub import keep_secret, scrub, scrub_text, scrubbing
from infra.tools.sealing import Repointed, masked_config, seal_config, with_stored_secrets
from workflows.contracts import ExecutionInput, ToolSpec
from workflows.definition import ToolNode
from workflows.memo import memo_key

KEY = "Kx9-unusual-secret"


def test_known_secrets_and_credential_shapes_are_masked() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    text = (
        f"bad key {KEY}; also sk-proj-abcdefghijklmnop1234, keel_{'a' * 43}, "
        f"Authorization: Bearer abc.def.ghi-123456 and {jwt}"
    )
    scrubbed = scrub_text(text, [KEY])
    for secret in (
        KEY,
        "sk-proj-abcdefghijklmnop1234",
        "keel_aaaa",
        "abc.def.ghi-123456",
        "eyJhbGciOi",
    ):
        assert secret not in scrubbed
    assert scrubbed.startswith("bad key ***;") and "Bearer ***" in scrubbed


def test_a_credential_in_a_urls_query_is_masked() -> None:
    ticket = "Vb3kq9ZrT0xw_Ue2m4Lh7cYd1aPn5sGf8jKi6oQeR2t"
    line = (
        f'127.0.0.1:50412 - "WebSocket /api/v1/Execution/ws/7?after=3&ticket={ticket}" [accepted]'
    )
    assert scrub_text(line) == (
        '127.0.0.1:50412 - "WebSocket /api/v1/Execution/ws/7?after=3&ticket=***" [accepted]'
    )
    url = "GET https://tool.example/search?q=cats&API_KEY=abc123def&page=2 failed"
    assert scrub_text(url) == "GET https://tool.example/search?q=cats&API_KEY=***&page=2 failed"


def test_ordinary_text_is_left_alone() -> None:
    text = "a bearer of news asked for basic help; task-12 took 3s; keel_watch ran"
    assert scrub_text(text, ["1", "", None]) == text  # too-short secrets are not masked


def test_nested_values_and_secrets_in_scope() -> None:
    assert scrub({"e": [f"x {KEY}"], KEY: 1}) == {"e": [f"x {KEY}"], KEY: 1}
    with scrubbing():
        keep_secret(KEY)
        assert scrub({"e": [f"x {KEY}"], KEY: 1}) == {"e": ["x ***"], "***": 1}
    assert scrub_text(KEY) == KEY  # the scope ended


SECRET_KEY = "test-server-key-for-sealing-000000000000"


def _stored(url: str, secret: str) -> dict:
    return seal_config(
        {"url": url, "headers": {"X-Api-Key": secret, "Accept": "json"}}, None, SECRET_KEY
    )


def test_a_run_snapshot_gets_its_secrets_back_only_from_the_same_destination() -> None:
    stored = _stored("https://a.example/x", "s3cret-value")
    snapshot = masked_config(stored)
    assert with_stored_secrets(snapshot, stored) == stored
    moved = _stored("https://b.example/x", "other-value")
    try:
        with_stored_secrets(snapshot, moved)
    except Repointed:
        pass
    else:
        raise AssertionError("a repointed tool's secret was sent to the old destination")


def test_the_memo_key_does_not_depend_on_secrets() -> None:
    node = ToolNode.model_validate({"id": "t", "type": "tool", "tool_id": 1})

    def key(config: dict) -> str:
        params = ExecutionInput(
            execution_id=1,
            workflow_id=1,
            workflow_version=1,
            definition={},
            tools={"1": ToolSpec(id=1, name="t", type="http", config=config)},
        )
        return memo_key(node, 1, {}, params)

    stored = _stored("https://a.example/x", "s3cret-value")
    resealed = _stored("https://a.example/x", "another-secret")
    assert key(stored) == key(resealed) == key(masked_config(stored))
    assert key(stored) != key(_stored("https://b.example/x", "s3cret-value"))
