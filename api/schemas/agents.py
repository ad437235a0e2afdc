from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, StringConstraints

from api.schemas.common import DbId, InputModel, OutputModel, PartialUpdate, Timestamp, http_url

# TEXT columns hold 65535 bytes on MySQL/MariaDB.
TEXT_BYTES = 65_535


def _optional_url(value: str | None) -> str | None:
    if value is None:
        return None
    http_url(value)
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "must not carry credentials (user:password@); send the key as "
            "api_key, which is stored encrypted"
        )
    return value


def _not_the_mask(value: SecretStr | None) -> SecretStr | None:
    if value is not None and value.get_secret_value().strip() == "***":
        raise ValueError(
            '"***" is how a secret is shown, not a key: send the real key, '
            "or leave api_key out to keep the stored one"
        )
    return value


def _fits_text(value: str | None) -> str | None:
    if value is not None and len(value.encode()) > TEXT_BYTES:
        raise ValueError(f"must be at most {TEXT_BYTES} bytes of UTF-8")
    return value


def _unique(ids: list[int]) -> list[int]:
    if len(set(ids)) != len(ids):
        raise ValueError("must not list the same tool twice")
    return ids


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Provider = Literal["openai", "fake"]
BaseUrl = Annotated[str | None, Field(max_length=500), AfterValidator(_optional_url)]
ToolIds = Annotated[list[DbId], Field(max_length=128), AfterValidator(_unique)]
SystemPrompt = Annotated[str, AfterValidator(_fits_text)]
ApiKey = Annotated[SecretStr, Field(max_length=4096), AfterValidator(_not_the_mask)]
Temperature = Annotated[float | None, Field(ge=0, le=2)]
MaxTokens = Annotated[int | None, Field(ge=1, le=1_000_000)]
MaxIterations = Annotated[int, Field(ge=1, le=100)]
Model = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class AgentCreate(InputModel):
    name: Name
    description: str = Field(default="", max_length=10_000)
    provider: Provider = "fake"
    model: Model = "fake-echo"
    base_url: BaseUrl = None
    api_key: ApiKey | None = Field(default=None, description="Write-only.")
    system_prompt: SystemPrompt = ""
    temperature: Temperature = None
    max_tokens: MaxTokens = None
    tool_ids: ToolIds = Field(default_factory=list)
    max_iterations: MaxIterations = 8
    metadata: dict[str, Any] = Field(default_factory=dict)


class AgentUpdate(PartialUpdate):
    """Partial update: only the fields sent change; ``api_key: null`` clears the key."""

    nullable = frozenset({"base_url", "api_key", "temperature", "max_tokens"})

    name: Name | None = None
    description: str | None = Field(default=None, max_length=10_000)
    provider: Provider | None = None
    model: Model | None = None
    base_url: BaseUrl = None
    api_key: ApiKey | None = None
    system_prompt: SystemPrompt | None = None
    temperature: Temperature = None
    max_tokens: MaxTokens = None
    tool_ids: ToolIds | None = None
    max_iterations: MaxIterations | None = None
    metadata: dict[str, Any] | None = None


class AgentOut(OutputModel):
    id: int
    name: str
    description: str
    provider: str
    model: str
    base_url: str | None
    # Whether a key is stored, read from the ciphertext column; the key is never shown.
    api_key_set: Annotated[bool, BeforeValidator(lambda stored: stored is not None)] = Field(
        validation_alias="api_key_encrypted"
    )
    system_prompt: str
    temperature: float | None
    max_tokens: int | None
    tool_ids: list[int]
    max_iterations: int
    metadata: dict[str, Any] = Field(validation_alias="metadata_")
    created_at: Timestamp
    updated_at: Timestamp
