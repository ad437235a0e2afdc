from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from api.schemas.common import InputModel, Timestamp
from workflows.definition import Definition

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class WorkflowCreate(InputModel):
    name: Name
    description: str = Field(default="", max_length=10_000)
    definition: Definition = Field(default_factory=Definition)


class WorkflowUpdate(InputModel):
    """Edits the draft only; published versions never change."""

    name: Name | None = None
    description: str | None = Field(default=None, max_length=10_000)
    definition: Definition | None = None


class WorkflowOut(BaseModel):
    id: int
    name: str
    description: str
    definition: dict[str, Any]
    status: Literal["draft", "published"]
    version: int
    has_unpublished_changes: bool
    created_at: Timestamp
    updated_at: Timestamp


class WorkflowVersionOut(BaseModel):
    workflow_id: int
    version: int
    definition: dict[str, Any]
    created_at: Timestamp
