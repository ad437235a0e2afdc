"""The fake OpenAI server, holding its streamed answer half way until the test says so:
the page can be seen showing the text that has arrived while the node still runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tests.support.fake_llm import FakeOpenAI, Turn


@dataclass
class GatedOpenAI(FakeOpenAI):
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def _chunks(self, turn: Turn, model: str, body: dict[str, Any]) -> AsyncIterator[str]:
        # The first chunk is the role; then one chunk per word.
        held_after = 1 + len(turn.content.split(" ")) // 2
        sent = 0
        async for chunk in super()._chunks(turn, model, body):
            yield chunk
            sent += 1
            if sent == held_after:
                await self.gate.wait()

    async def __aenter__(self) -> GatedOpenAI:
        await super().__aenter__()
        return self
