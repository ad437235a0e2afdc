"""The envelope and list shapes every response uses (also documents them in OpenAPI)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, ClassVar, Generic, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, to_json
from starlette.responses import Response

T = TypeVar("T")

# ISO 8601 with an explicit offset ("+00:00"), which every client parses.
# The method itself, not a lambda around it: pydantic-core calls it with no Python frame
# (a page of executions serializes ~260 of them).
Timestamp = Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str)]


def timestamp(value: datetime | None) -> str | None:
    """A datetime as ``Timestamp`` writes it, for data answered in its JSON form."""
    return None if value is None else value.isoformat()


# Rows have 32-bit integer ids (INT on MySQL); larger numbers name nothing.
MAX_DB_ID = 2**31 - 1
DbId = Annotated[int, Field(ge=1, le=MAX_DB_ID)]

# MariaDB refuses JSON documents nested 32 levels deep; a body nested at most this
# deep stores documents (its parts) nested at most 31.
MAX_JSON_DEPTH = 32


def http_url(value: str) -> str:
    """An absolute http(s) URL with a host: what an HTTP client can actually call."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if any(c.isspace() for c in value):
        raise ValueError("must not contain spaces; percent-encode them")
    return value


class Envelope(BaseModel, Generic[T]):
    code: int = 0
    msg: str = "success"
    data: T


class ErrorEnvelope(BaseModel):
    code: int
    msg: str
    data: Any = None


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for errors: the envelope, not FastAPI's ``{"detail": ...}``."""
    described = {
        404: "No such resource",
        409: "Conflicts with the current state",
        422: "Invalid request: data lists the field errors with their locations",
    }
    return {s: {"model": ErrorEnvelope, "description": described.get(s, "Error")} for s in statuses}


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int


def _text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None: a NUL character (databases and drivers
    cut or refuse it) or a lone surrogate (not encodable as UTF-8)."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (\\ud800-\\udfff), which is not valid UTF-8"
    return None


def _json_problems(
    value: Any, loc: tuple[str | int, ...], depth: int
) -> Iterator[InitErrorDetails]:
    if isinstance(value, str):
        problem = _text_problem(value)
        if problem:
            yield {"type": PydanticCustomError("text", problem), "loc": loc, "input": None}
    elif isinstance(value, float) and not math.isfinite(value):
        yield {
            "type": PydanticCustomError("json_number", "NaN and Infinity are not JSON numbers"),
            "loc": loc,
            "input": None,
        }
    elif isinstance(value, dict | list):
        if depth > MAX_JSON_DEPTH:
            yield {
                "type": PydanticCustomError(
                    "json_depth", "nested more than {max} levels deep", {"max": MAX_JSON_DEPTH}
                ),
                "loc": loc,
                "input": None,
            }
            return
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            problem = _text_problem(key) if isinstance(key, str) else None
            if problem:
                yield {
                    "type": PydanticCustomError("text", "key " + problem),
                    "loc": (*loc, ascii(key)),
                    "input": None,
                }
                continue
            yield from _json_problems(item, (*loc, key), depth + 1)


class InputModel(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped, and the JSON
    must be storable as is (no NaN or Infinity, bounded nesting, no NUL or lone
    surrogate in any text): a 422 before anything is written."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @model_validator(mode="before")
    @classmethod
    def _storable_json(cls, data: Any) -> Any:
        problems = list(_json_problems(data, (), 1))
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return data


class PartialUpdate(InputModel):
    """Update bodies: only the fields sent change. A field may be sent as null (to clear
    it) only if it is listed in ``nullable``; any other explicit null is refused."""

    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_null_where_required(self) -> Self:
        nulls = [
            f
            for f in type(self).model_fields
            if f in self.model_fields_set and f not in self.nullable and getattr(self, f) is None
        ]
        if nulls:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    {
                        "type": PydanticCustomError("null", "cannot be null"),
                        "loc": (f,),
                        "input": None,
                    }
                    for f in nulls
                ],
            )
        return self

    def changes(self) -> dict[str, Any]:
        """The fields sent, by name, as validated (nested models stay models)."""
        return {f: getattr(self, f) for f in type(self).model_fields if f in self.model_fields_set}


class OutputModel(BaseModel):
    """Response bodies, built from the stored row: ``model_validate(row)``."""

    model_config = ConfigDict(from_attributes=True)


JSON = "application/json"


def ok(data: T, msg: str = "success") -> Envelope[T]:
    """A route's answer: ``data`` in the envelope. Routes declare ``-> Envelope[X]``, which
    is also their documented response model."""
    return Envelope(data=data, msg=msg)


def ok_json(data: Any, msg: str = "success") -> Response:
    """``ok`` for data already in its JSON form (timestamps as text, as ``Timestamp``
    writes them), answered as it is: no model is built for it. For a hot read whose
    route keeps its ``response_model`` for the OpenAPI document; the tests hold its
    answers to that model."""
    # NaN and Infinity (a tool's answer may hold them) as null, as the models write them.
    body = to_json({"code": 0, "msg": msg, "data": data}, inf_nan_mode="null")
    return Response(body, media_type=JSON)
