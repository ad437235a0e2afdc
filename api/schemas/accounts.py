"""Shapes of the Auth, Workspace and ApiKey endpoints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from api.schemas.common import InputModel, OutputModel, Timestamp
from infra.accounts import email_problem
from infra.security.roles import Role

Name = Annotated[str, Field(min_length=1, max_length=100)]
Password = Annotated[str, Field(min_length=8, max_length=1024)]


class PrincipalOut(BaseModel):
    type: Literal["user", "api_key", "operator"]
    id: int | None
    name: str


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105  (the OAuth 2 token type)
    expires_in: int
    workspace_id: int
    role: Role


class MeOut(BaseModel):
    principal: PrincipalOut
    workspace_id: int
    role: Role


class WsTicketOut(BaseModel):
    ticket: str
    expires_in: int


class WorkspaceIn(InputModel):
    name: Name

    @field_validator("name")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value or not value.strip():
            raise ValueError("must be printable text")
        return value


class WorkspaceOut(BaseModel):
    id: int
    name: str
    role: Role
    created_at: Timestamp


class MemberIn(InputModel):
    email: str
    role: Role
    password: Password | None = Field(
        default=None, description="Creates the user with this password if it has no account."
    )

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        problem = email_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class MemberUpdate(InputModel):
    role: Role


class MemberOut(OutputModel):
    user_id: int
    email: str
    name: str
    role: Role
    created_at: Timestamp


class ApiKeyIn(InputModel):
    name: Name
    role: Role
    expires_at: Timestamp | None = None

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: Any) -> Any:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a UTC offset, e.g. 2030-01-01T00:00:00Z")
        return value


class ApiKeyOut(BaseModel):
    id: int
    name: str
    role: Role
    prefix: str
    created_at: Timestamp
    created_by: PrincipalOut
    expires_at: Timestamp | None
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None


class NewApiKeyOut(ApiKeyOut):
    key: str = Field(description="The key itself. Shown this once; only a hash is kept.")
