"""Pins what infra/streams.py relies on that the SDK does not export: the poll query's
name, the failure types of a poll update and the wire form of a poll result's items. A
new temporalio that changes any of them fails here, not in a run."""

from __future__ import annotations

import dataclasses

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.contrib.workflow_streams import PollResult, _stream, _types

from infra.streams import POLL_QUERY, STREAM_DRAINING, TRUNCATED_OFFSET, decode_wire_item
from infra.temporal import data_converter as keel_converter
from workflows.events import Event, EventType, event


class ConverterOnly:
    data_converter = keel_converter  # reads what the SDK's pydantic converter wrote


def test_the_poll_query_name_is_the_sdks() -> None:
    assert POLL_QUERY == _stream._POLL  # the private name we rely on


def test_the_poll_failure_types_are_the_sdks() -> None:
    assert TRUNCATED_OFFSET == _types.TRUNCATED_OFFSET_ERROR_TYPE
    assert STREAM_DRAINING == _types.STREAM_DRAINING_ERROR_TYPE


def test_wire_items_decode_as_the_sdk_encodes_them() -> None:
    sent = event(EventType.NODE_STARTED, "2025-01-01T00:00:00+00:00", "a")
    payload = pydantic_data_converter.payload_converter.to_payloads([sent])[0]
    wire = _types._encode_payload(payload)  # private: the SDK's own encoder
    assert decode_wire_item(ConverterOnly(), wire, Event) == sent  # type: ignore[arg-type]
    assert {f.name for f in dataclasses.fields(PollResult)} >= {
        "items",
        "next_offset",
        "more_ready",
    }
