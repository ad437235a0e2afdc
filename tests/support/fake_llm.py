"""An OpenAI-compatible chat-completions server on 127.0.0.1, scripted per test.

Each request takes the next scripted turn (the last one repeats): a reply with
text and/or tool calls and known usage, or an error status. Streaming requests
get server-sent chunks, with usage in the last chunk as OpenAI sends it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.net import free_port
from tests.support.waiting import wait_for


@dataclass
class Turn:
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {"name", "args"}
    prompt_tokens: int = 10
    completion_tokens: int = 5
    status: int = 200  # anything else: an error answer
    echo_key: bool = False  # the error names the key sent, as some providers' 401s do


@dataclass
class FakeOpenAI:
    turns: list[Turn] = field(default_factory=lambda: [Turn(content="ok")])
    port: int = field(default_factory=free_port)
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _message(self, turn: Turn) -> dict[str, Any]:
        calls = [
            {
                "id": f"call_{len(self.requests)}_{i}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["args"])},
            }
            for i, c in enumerate(turn.tool_calls)
        ]
        return {
            "role": "assistant",
            "content": turn.content or None,
            **({"tool_calls": calls} if calls else {}),
        }

    def _usage(self, turn: Turn) -> dict[str, int]:
        return {
            "prompt_tokens": turn.prompt_tokens,
            "completion_tokens": turn.completion_tokens,
            "total_tokens": turn.prompt_tokens + turn.completion_tokens,
        }

    def turn_for(self, body: dict[str, Any]) -> Turn:
        """The answer to this request: the next scripted turn (the last one repeats)."""
        return self.turns[min(len(self.requests) - 1, len(self.turns) - 1)]

    async def _complete(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"body": body, "authorization": request.headers.get("authorization")})
        turn = self.turn_for(body)
        if turn.status != 200:
            sent = (request.headers.get("authorization") or "").removeprefix("Bearer ")
            message = (
                f"Incorrect API key provided: {sent}"
                if turn.echo_key
                else f"scripted {turn.status}"
            )
            return JSONResponse(
                {"error": {"message": message, "type": "scripted", "code": None}},
                status_code=turn.status,
            )
        model = body.get("model", "fake")
        finish = "tool_calls" if turn.tool_calls else "stop"
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": self._message(turn), "finish_reason": finish}
                    ],
                    "usage": self._usage(turn),
                }
            )
        return StreamingResponse(self._chunks(turn, model, body), media_type="text/event-stream")

    async def _chunks(self, turn: Turn, model: str, body: dict[str, Any]) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            payload = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(payload)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        words = turn.content.split(" ") if turn.content else []
        for i, word in enumerate(words):
            yield chunk({"content": word if i == len(words) - 1 else word + " "})
        for i, call in enumerate(self._message(turn).get("tool_calls", [])):
            yield chunk({"tool_calls": [{"index": i, **call}]})
        yield chunk({}, "tool_calls" if turn.tool_calls else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [],
                "usage": self._usage(turn),
            }
            yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"

    async def __aenter__(self) -> FakeOpenAI:
        app = Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])])
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="off")
        )
        self._task = asyncio.create_task(self._server.serve())

        async def started() -> bool:
            return self._server.started

        await wait_for(started, timeout=10, what="fake OpenAI server")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        await self._task
