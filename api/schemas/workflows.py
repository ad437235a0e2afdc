from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, computed_field

from api.schemas.common import InputModel, OutputModel, PartialUpdate, Timestamp
from workflows.definition import Definition

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class WorkflowCreate(InputModel):
    name: Name
    description: str = Field(default="", max_length=10_000)
    definition: Definition = Field(default_factory=Definition)


class WorkflowUpdate(PartialUpdate):
    """Edits the draft only; published versions never change."""

    name: Name | None = None
    description: str | None = Field(default=None, max_length=10_000)
    definition: Definition | None = None


class WorkflowOut(OutputModel):
    id: int
    name: str
    description: str
    definition: dict[str, Any]
    version: int
    has_unpublished_changes: bool
    created_at: Timestamp
    updated_at: Timestamp

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> Literal["draft", "published"]:
        return "published" if self.version > 0 else "draft"


class WorkflowVersionOut(OutputModel):
    workflow_id: int
    version: int
    definition: dict[str, Any]
    created_at: Timestamp
