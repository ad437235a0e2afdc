"""The envelope and list shapes every response uses (also documents them in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, PlainSerializer

T = TypeVar("T")

# ISO 8601 with an explicit offset ("+00:00"), which every client parses.
Timestamp = Annotated[datetime, PlainSerializer(lambda d: d.isoformat(), return_type=str)]


class Envelope(BaseModel, Generic[T]):
    code: int = 0
    msg: str = "success"
    data: T


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int


class InputModel(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def ok(data: Any) -> dict[str, Any]:
    return {"code": 0, "msg": "success", "data": data}
