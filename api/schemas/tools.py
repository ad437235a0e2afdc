from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from api.schemas.common import InputModel, OutputModel, PartialUpdate, Timestamp, http_url
from infra.tools.sealing import masked_config

TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


def _json_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from exc
    if value.get("type", "object") != "object":
        raise ValueError('tool arguments are an object: use {"type": "object", ...}')
    return value


class SecretValue(BaseModel):
    """A header or env value; ``secret: true`` stores it encrypted and never returns it."""

    value: str = Field(max_length=8192)
    secret: bool = True


HeaderValue = str | SecretValue
Url = Annotated[str, Field(max_length=2000), AfterValidator(http_url)]
Timeout = Annotated[float, Field(gt=0, le=600)]


class HttpToolConfig(InputModel):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: Url
    headers: dict[str, HeaderValue] = Field(default_factory=dict)
    timeout_s: Timeout = 30.0
    delivery: Literal["at_least_once", "at_most_once"] = "at_least_once"


class McpToolConfig(InputModel):
    transport: Literal["stdio", "streamable_http", "sse"]
    command: str | None = Field(default=None, max_length=1000)
    args: list[str] = Field(default_factory=list, max_length=100)
    env: dict[str, HeaderValue] = Field(default_factory=dict)
    url: Url | None = None
    headers: dict[str, HeaderValue] = Field(default_factory=dict)
    tool_name: str | None = Field(default=None, max_length=200)
    timeout_s: Timeout = 30.0

    @model_validator(mode="after")
    def _transport_needs(self) -> McpToolConfig:
        if self.transport == "stdio" and not self.command:
            raise ValueError("stdio transport needs a command")
        if self.transport != "stdio" and not self.url:
            raise ValueError(f"{self.transport} transport needs a url")
        return self


ToolName = Annotated[str, Field(pattern=TOOL_NAME_PATTERN)]
InputSchema = Annotated[dict[str, Any] | None, AfterValidator(_json_schema)]


def parse_config(tool_type: str, config: Any) -> HttpToolConfig | McpToolConfig:
    model = HttpToolConfig if tool_type == "http" else McpToolConfig
    return model.model_validate(config)


class ToolCreate(InputModel):
    name: ToolName
    description: str = Field(default="", max_length=10_000)
    type: Literal["http", "mcp"]
    input_schema: InputSchema = None
    config: HttpToolConfig | McpToolConfig

    @field_validator("config", mode="before")
    @classmethod
    def _config_by_type(cls, config: Any, info: ValidationInfo) -> Any:
        # Pick the config model from `type` so errors name the right fields (config.url).
        tool_type = info.data.get("type")
        if tool_type in ("http", "mcp") and isinstance(config, dict):
            return parse_config(tool_type, config)
        return config


class ToolUpdate(PartialUpdate):
    nullable = frozenset({"input_schema"})

    name: ToolName | None = None
    description: str | None = Field(default=None, max_length=10_000)
    type: Literal["http", "mcp"] | None = None
    input_schema: InputSchema = None
    config: dict[str, Any] | None = None


class ToolOut(OutputModel):
    id: int
    name: str
    description: str
    type: str
    input_schema: dict[str, Any] | None
    config: Annotated[dict[str, Any], AfterValidator(masked_config)]  # secrets as "***"
    created_at: Timestamp
    updated_at: Timestamp


class ToolTestRequest(InputModel):
    arguments: dict[str, Any] | None = None


class ToolTestResult(BaseModel):
    ok: bool
    latency_ms: float
    tools: list[dict[str, Any]] = Field(
        default_factory=list, description="MCP: the tools the server offers."
    )
    result: Any = None
    error: str | None = None
