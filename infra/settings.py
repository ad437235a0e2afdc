"""One settings class for the whole platform.

Every value can be set from the environment with the ``KEEL_`` prefix or from a
``.env`` file (see ``.env.example``). Unsafe combinations fail at start-up, not
at the first request.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_SECRET_KEY = "change-me-in-production"  # noqa: S105  (the value we refuse)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KEEL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # A blank value (KEEL_OPENAI_BASE_URL=) means "not set", not an empty string.
        env_ignore_empty=True,
    )

    environment: Literal["development", "test", "production"] = "development"

    # Everything the embedded platform keeps (app DB, Temporal DB) lives here.
    data_dir: Path = Path("data")
    database_url: str = ""  # empty: SQLite file under data_dir

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "keel"
    # Temporal workflow ids are "<prefix>-<execution id>"; a distinct prefix lets several
    # Keel databases share one Temporal namespace without their ids colliding.
    workflow_id_prefix: str = Field(default="execution", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Where operators open the Temporal UI; used to build execution links.
    temporal_ui_url: str = "http://localhost:8233"
    # A run continues as new once its Temporal history has this many events (Temporal
    # warns at 10,240 and ends a run at 51,200), or sooner when Temporal suggests it.
    history_events_per_run: int = Field(default=5000, ge=100, le=10_000)

    # -- Temporal beyond the dev server: a cluster or Temporal Cloud ------------------------
    # TLS is on when temporal_tls is true or any TLS file or the API key is set. mTLS
    # (self-hosted, Temporal Cloud with certificates): the client certificate and its key,
    # both PEM files. The server's CA (PEM) when it is not in the system's trust store;
    # the server name to verify when it differs from the address's host.
    temporal_tls: bool = False
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_tls_ca: Path | None = None
    temporal_tls_server_name: str | None = None
    # Temporal Cloud API-key authentication (sent as a bearer token, over TLS).
    temporal_api_key: SecretStr | None = None
    # On SIGTERM a worker stops taking new tasks and gives in-flight activities this long
    # to finish; after it, they are cancelled and Temporal retries them on another worker.
    worker_shutdown_grace_s: float = Field(default=20.0, ge=0, le=3600)
    # Workflow tasks a worker holds at once (the SDK's default is 100). Its workflow code
    # runs on one core (Python's lock), so more in hand only wait inside the process,
    # where a watcher's poll that reaches the run needs a workflow task of its own; one
    # still waiting in Temporal's queue takes the poll along, and a new run's first task
    # goes to a worker with room (docs/benchmarks.md, nineteenth pass).
    worker_workflow_tasks: int = Field(default=4, ge=2, le=1000)

    @model_validator(mode="after")
    def _temporal_tls_complete(self) -> Settings:
        if (self.temporal_tls_cert is None) != (self.temporal_tls_key is None):
            raise ValueError(
                "KEEL_TEMPORAL_TLS_CERT and KEEL_TEMPORAL_TLS_KEY go together: "
                "set both (mTLS) or neither"
            )
        for env, path in (
            ("KEEL_TEMPORAL_TLS_CERT", self.temporal_tls_cert),
            ("KEEL_TEMPORAL_TLS_KEY", self.temporal_tls_key),
            ("KEEL_TEMPORAL_TLS_CA", self.temporal_tls_ca),
        ):
            if path is not None and not path.is_file():
                raise ValueError(f"{env}: {path} is not a readable file")
        return self

    @property
    def temporal_uses_tls(self) -> bool:
        return (
            self.temporal_tls
            or self.temporal_api_key is not None
            or any(
                value is not None
                for value in (
                    self.temporal_tls_cert,
                    self.temporal_tls_ca,
                    self.temporal_tls_server_name,
                )
            )
        )

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    temporal_port: int = Field(default=7233, ge=1, le=65535)
    temporal_ui_port: int = Field(default=8233, ge=1, le=65535)

    # OpenAI-compatible model endpoint used when an agent sets no base_url/api_key.
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("KEEL_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    llm_timeout_s: float = Field(default=120.0, gt=0, le=3600)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    secret_key: str = PLACEHOLDER_SECRET_KEY

    # Access control. Access tokens (JWT) live this many seconds; a client signs in again.
    access_token_ttl_s: int = Field(default=900, ge=60, le=86_400)
    # An API process remembers a verified credential (API key, or a token's membership)
    # this many seconds instead of querying it on every request: a revocation, role
    # change or removal made through another process takes effect within this bound
    # (through this process: at once). 0: check every request against the database.
    credential_cache_s: float = Field(default=1.0, ge=0, le=60)
    # A worker remembers the budgets and the agent's stored API key that a model call
    # reads before it starts, per workspace and agent, this many seconds: a budget or key
    # changed meanwhile applies to the calls that start after this bound. What has been
    # spent is summed before every call all the same. 0: read both before every call.
    model_call_cache_s: float = Field(default=1.0, ge=0, le=60)
    # After this many failed sign-ins for one email within login_lockout_s, the next ones
    # get 429 until the window has passed (counted per API process).
    login_max_failures: int = Field(default=5, ge=1, le=1000)
    login_lockout_s: int = Field(default=300, ge=1, le=86_400)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Requests whose body is larger than this get 413.
    max_request_bytes: int = Field(default=1_048_576, ge=1024)

    # Tools. HTTP and MCP HTTP tools may not reach loopback, private, or other
    # non-public addresses unless tools_allow_private is true (local development, the
    # test-suite); link-local (169.254.0.0/16, fe80::/10) and cloud-metadata addresses
    # need tool_allow_link_local as well.
    tools_allow_private: bool = False
    tool_allow_link_local: bool = False
    # Tool responses (HTTP bodies, MCP results) longer than this many characters are cut.
    tool_max_response_chars: int = Field(default=64_000, ge=100, le=10_000_000)
    # The exact commands an MCP stdio tool may start (comma-separated, compared as
    # written, e.g. "/usr/local/bin/mcp-server-git,uvx"); empty (the default): stdio
    # tools are disabled. An interpreter given inline code (-c, -e, eval...) is refused.
    mcp_stdio_allowed: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Seconds to connect to an MCP server, and for each request, when the tool sets none.
    mcp_timeout_s: float = Field(default=30.0, gt=0, le=600)

    @field_validator("mcp_stdio_allowed", mode="before")
    @classmethod
    def _split_allowed(cls, value: object) -> object:
        if isinstance(value, str):
            return [command.strip() for command in value.split(",") if command.strip()]
        return value

    # Rate limit: each principal (API key or user) may make this many requests per
    # second on average, in bursts of up to rate_limit_burst; more get 429 with
    # Retry-After (counted per API process). 0 turns the limit off.
    rate_limit_per_s: float = Field(default=50.0, ge=0, le=100_000)
    rate_limit_burst: int = Field(default=100, ge=1, le=1_000_000)
    # Executions of one workspace running (or waiting) at once; starting one more is a
    # 429 until one finishes (the new execution stays pending). 0: no cap.
    max_running_executions: int = Field(default=100, ge=0, le=1_000_000)

    # JSON or TOML file of model prices laid over the built-in table (infra.pricing);
    # empty: the built-in prices only. Read when the worker starts, so a bad file stops it.
    pricing_file: Path | None = None

    # Prometheus metrics of a worker process (the API serves its own at /metrics): Keel's
    # (model calls, tokens, cost, tool calls, node durations) on worker_metrics_port, the
    # Temporal SDK's (task slots, polls, latencies...) on temporal_metrics_port; unset:
    # not served. Bound to metrics_host (0.0.0.0 to let a scraper on another host in).
    metrics_host: str = "127.0.0.1"
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    temporal_metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("pricing_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("pricing_file")
    @classmethod
    def _pricing_file_exists(cls, value: Path | None) -> Path | None:
        # Only that it is there: its content is checked by infra.pricing when the
        # worker starts (settings import no domain module).
        if value is not None and not value.is_file():
            raise ValueError(
                f"KEEL_PRICING_FILE: cannot read the pricing file {value}: no such file"
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.environment == "production" and self.secret_key == PLACEHOLDER_SECRET_KEY:
            raise ValueError(
                "KEEL_SECRET_KEY is the development placeholder; "
                "set a long random value before running in production"
            )
        if self.environment == "production" and len(self.secret_key) < 32:
            raise ValueError("KEEL_SECRET_KEY must be at least 32 characters in production")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'keel.db').resolve()}"

    @property
    def temporal_db_path(self) -> Path:
        return (self.data_dir / "temporal.db").resolve()


def with_development_key(settings: Settings) -> Settings:
    """In development, the placeholder key is replaced by the installation's own random
    key, made on first start in ``<data dir>/secret_key`` (0600). Production refuses the
    placeholder (above); tests set their own key."""
    if settings.environment != "development" or settings.secret_key != PLACEHOLDER_SECRET_KEY:
        return settings
    from infra.security.files import development_secret_key

    return settings.model_copy(update={"secret_key": development_secret_key(settings.data_dir)})


@lru_cache
def get_settings() -> Settings:
    return with_development_key(Settings())
