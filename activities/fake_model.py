"""The built-in offline model (provider ``fake``): deterministic, free, no network.

It answers with text derived from its input, so runs are reproducible, and
counts tokens as whitespace-separated words. An agent's ``metadata.fake`` can
script it, which makes retries, slowness and cancellation demonstrable offline:

- ``reply``: answer with this text instead;
- ``fail_attempts``: fail this many attempts of each call before succeeding;
- ``delay_s``: take this long to answer (cancellable).
"""

from __future__ import annotations

import asyncio
from typing import Any

from activities.contracts import LlmCallInput, LlmCallResult, Usage


class FakeModelError(Exception):
    """A scripted failure (``metadata.fake.fail_attempts``)."""


def count_tokens(text: str) -> int:
    return len(text.split())


def _text(message: dict[str, Any]) -> str:
    content = message.get("content", "")
    return content if isinstance(content, str) else str(content)


async def complete(params: LlmCallInput, attempt: int) -> LlmCallResult:
    script: dict[str, Any] = params.agent.metadata.get("fake") or {}
    if attempt <= int(script.get("fail_attempts", 0)):
        raise FakeModelError(f"scripted failure on attempt {attempt}")
    delay = float(script.get("delay_s", 0))
    if delay > 0:
        await asyncio.sleep(delay)
    prompt = " ".join(_text(m) for m in params.messages)
    last_user = next((_text(m) for m in reversed(params.messages) if m.get("role") == "user"), "")
    content = str(script["reply"]) if "reply" in script else f"[{params.agent.name}] {last_user}"
    return LlmCallResult(
        content=content,
        usage=Usage(prompt_tokens=count_tokens(prompt), completion_tokens=count_tokens(content)),
        model=params.agent.model,
        attempt=attempt,
    )
