"""Chat models: any OpenAI-compatible endpoint, and the offline ``fake`` model.

Provider ``openai`` is ``langchain-openai``'s ``ChatOpenAI`` pointed at the
agent's ``base_url`` (else ``KEEL_OPENAI_BASE_URL``, else OpenAI), so OpenAI,
vLLM, Ollama and LM Studio all work. Its own retries are off: Temporal retries
the activity, and ``LlmError.retryable`` says whether it should.

Provider ``fake`` is ``langchain_core``'s ``GenericFakeChatModel`` fed with a
reply computed from the conversation: deterministic, free and offline. It counts
tokens as whitespace-separated words. An agent's ``metadata.fake`` scripts it:

- ``reply``: answer with this text (default: ``[<agent name>] <last user or tool
  message>``);
- ``script``: a list of turns, one per model call of the node (the last repeats),
  each ``{"tool_calls": [{"name": ..., "args": {...}}]}`` or ``{"reply": ...}``,
  so tool-calling agents can be demonstrated offline;
- ``fail_attempts``: fail this many attempts of each call before answering;
- ``delay_s``: take this long to answer (cancellable).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_openai import ChatOpenAI
from opentelemetry.trace import SpanKind

from infra.settings import Settings
from infra.tracing import tracer

# Where provider ``openai`` goes when neither the agent nor the settings say.
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"


class LlmError(Exception):
    """A failed model call; ``retryable`` tells Temporal whether to try again."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class AgentModel:
    """What a model call needs to know about the agent (secrets already decrypted)."""

    name: str
    provider: str
    model: str
    base_url: str | None = None
    api_key: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChatReply:
    content: str
    tool_calls: list[dict[str, Any]]
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


def to_messages(messages: list[dict[str, Any]]) -> list[BaseMessage]:
    """Our stored conversation (OpenAI-like dicts) as LangChain messages."""
    out: list[BaseMessage] = []
    for m in messages:
        role, content = m.get("role"), m.get("content") or ""
        if role == "system":
            out.append(SystemMessage(content=content))
        elif role == "assistant":
            out.append(
                AIMessage(
                    content=content,
                    tool_calls=[
                        {"id": c["id"], "name": c["name"], "args": c.get("args") or {}}
                        for c in m.get("tool_calls") or []
                    ],
                )
            )
        elif role == "tool":
            out.append(ToolMessage(content=content, tool_call_id=m["tool_call_id"]))
        else:
            out.append(HumanMessage(content=content))
    return out


def tool_schema(name: str, description: str, input_schema: dict[str, Any] | None) -> dict[str, Any]:
    """A tool as the model sees it (OpenAI function-calling format)."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description or name,
            "parameters": input_schema or {"type": "object", "properties": {}},
        },
    }


# -- the offline model -------------------------------------------------------------------


class FakeModelError(Exception):
    """A scripted failure (``metadata.fake.fail_attempts``)."""


def count_tokens(text: str) -> int:
    return len(text.split())


def _text(message: dict[str, Any]) -> str:
    content = message.get("content", "")
    return content if isinstance(content, str) else json.dumps(content)


def fake_reply(agent: AgentModel, messages: list[dict[str, Any]], call_index: int) -> AIMessage:
    script: dict[str, Any] = agent.metadata.get("fake") or {}
    turns = script.get("script") or []
    turn: dict[str, Any] = turns[min(call_index, len(turns) - 1)] if turns else {}
    prompt_tokens = sum(count_tokens(_text(m)) for m in messages)
    if turn.get("tool_calls"):
        calls = [
            {"id": f"call_{call_index}_{i}", "name": c["name"], "args": c.get("args", {})}
            for i, c in enumerate(turn["tool_calls"])
        ]
        completion = sum(count_tokens(json.dumps(c)) for c in calls)
        return AIMessage(
            content="",
            tool_calls=calls,
            usage_metadata={
                "input_tokens": prompt_tokens,
                "output_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            },
        )
    if "reply" in turn or "reply" in script:
        content = str(turn.get("reply", script.get("reply")))
    else:
        last = next((_text(m) for m in reversed(messages) if m.get("role") in ("user", "tool")), "")
        content = f"[{agent.name}] {last}"
    completion = count_tokens(content)
    return AIMessage(
        content=content,
        usage_metadata={
            "input_tokens": prompt_tokens,
            "output_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        },
    )


# -- calling a model ----------------------------------------------------------------------


def build_model(
    agent: AgentModel, settings: Settings, messages: list[dict[str, Any]], call_index: int
) -> BaseChatModel:
    if agent.provider == "fake":
        return GenericFakeChatModel(messages=iter([fake_reply(agent, messages, call_index)]))
    if agent.provider != "openai":
        raise LlmError(f"unknown provider {agent.provider!r}", retryable=False)
    api_key = agent.api_key or (
        settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    )
    base_url = agent.base_url or settings.openai_base_url or None
    if not api_key and base_url is None:
        raise LlmError(
            f"agent {agent.name!r} has no api_key and OPENAI_API_KEY is not set", retryable=False
        )
    options: dict[str, Any] = {}
    if agent.temperature is not None:
        options["temperature"] = agent.temperature
    if agent.max_tokens is not None:
        options["max_tokens"] = agent.max_tokens
    return ChatOpenAI(
        model=agent.model,
        base_url=base_url,
        # Local servers (vLLM, Ollama) often need no key; the client insists on one.
        api_key=api_key or "not-needed",  # type: ignore[arg-type]
        max_retries=0,  # Temporal owns retries
        timeout=settings.llm_timeout_s,
        stream_usage=True,
        **options,
    )


async def call_model(
    agent: AgentModel,
    settings: Settings,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    call_index: int,
    attempt: int,
    on_delta: Callable[[str], None] | None = None,
) -> ChatReply:
    """One model call. Streams text through ``on_delta`` when the provider streams.
    Traced as a client span (OpenTelemetry's GenAI conventions) while tracing is on."""
    attributes: dict[str, str | int] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": agent.provider,
        "gen_ai.request.model": agent.model,
    }
    endpoint = agent.base_url or settings.openai_base_url or DEFAULT_OPENAI_URL
    if agent.provider != "fake":
        url = urlsplit(endpoint)
        attributes.update(
            {
                "server.address": url.hostname or "",
                "server.port": url.port or (443 if url.scheme == "https" else 80),
            }
        )
    with tracer().start_as_current_span(
        f"chat {agent.model}", kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        reply = await _call_model(agent, settings, messages, tools, call_index, attempt, on_delta)
        span.set_attributes(
            {
                "gen_ai.response.model": reply.model,
                "gen_ai.usage.input_tokens": reply.prompt_tokens,
                "gen_ai.usage.output_tokens": reply.completion_tokens,
            }
        )
        return reply


async def _call_model(
    agent: AgentModel,
    settings: Settings,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    call_index: int,
    attempt: int,
    on_delta: Callable[[str], None] | None,
) -> ChatReply:
    script: dict[str, Any] = agent.metadata.get("fake") or {}
    if agent.provider == "fake":
        if attempt <= int(script.get("fail_attempts", 0)):
            raise LlmError(f"scripted failure on attempt {attempt}", retryable=True)
        if float(script.get("delay_s", 0)) > 0:
            await asyncio.sleep(float(script["delay_s"]))
    model = build_model(agent, settings, messages, call_index)
    bound: Any = model.bind_tools(tools) if tools and agent.provider != "fake" else model
    try:
        if on_delta is not None and agent.provider != "fake":
            message: AIMessageChunk | AIMessage | None = None
            async for chunk in bound.astream(to_messages(messages)):
                if isinstance(chunk.content, str) and chunk.content:
                    on_delta(chunk.content)
                message = chunk if message is None else message + chunk
            if message is None:
                raise LlmError("the model returned an empty stream", retryable=True)
        else:
            message = await bound.ainvoke(to_messages(messages))
    except openai.APIStatusError as exc:
        raise _status_error(exc) from exc
    except (openai.APITimeoutError, httpx.TimeoutException) as exc:
        raise LlmError(
            f"the model did not answer within {settings.llm_timeout_s:g}s", retryable=True
        ) from exc
    except openai.APIConnectionError as exc:
        raise LlmError(f"cannot reach the model endpoint: {exc}", retryable=True) from exc
    return _reply(message, agent.model)


def _status_error(exc: openai.APIStatusError) -> LlmError:
    status = exc.status_code
    detail = exc.message or str(exc)
    if status == 429:
        return LlmError(f"rate limited by the model provider (429): {detail}", retryable=True)
    if status >= 500:
        return LlmError(f"the model provider failed ({status}): {detail}", retryable=True)
    if status in (401, 403):
        return LlmError(
            f"the model provider refused the credentials ({status}): {detail}; "
            "check the agent's api_key",
            retryable=False,
        )
    return LlmError(
        f"the model provider rejected the request ({status}): {detail}", retryable=False
    )


def _reply(message: AIMessage | AIMessageChunk, default_model: str) -> ChatReply:
    usage: dict[str, Any] = dict(message.usage_metadata or {})
    input_details: dict[str, Any] = dict(usage.get("input_token_details") or {})
    output_details: dict[str, Any] = dict(usage.get("output_token_details") or {})
    content = message.content if isinstance(message.content, str) else json.dumps(message.content)
    return ChatReply(
        content=content,
        tool_calls=[
            {"id": c.get("id") or f"call_{i}", "name": c["name"], "args": c["args"]}
            for i, c in enumerate(message.tool_calls)
        ],
        model=str(message.response_metadata.get("model_name") or default_model),
        prompt_tokens=int(usage.get("input_tokens", 0)),
        completion_tokens=int(usage.get("output_tokens", 0)),
        cached_tokens=int(input_details.get("cache_read", 0) or 0),
        reasoning_tokens=int(output_details.get("reasoning", 0) or 0),
    )
