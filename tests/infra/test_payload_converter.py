"""Keel's payload converter: the SDK's pydantic converter, with one cache of TypeAdapters
for every converter the worker makes (one per workflow run it loads)."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import BaseModel, TypeAdapter
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter

from infra.temporal import data_converter


class Answer(BaseModel):
    text: str
    at: datetime
    tokens: dict[str, int]


ANSWER = Answer(text="hi", at=datetime(2026, 12, 1, 12, 0), tokens={"prompt": 3})


def test_it_writes_and_reads_what_the_sdks_pydantic_converter_does() -> None:
    ours = data_converter.payload_converter
    sdks = pydantic_data_converter.payload_converter
    [written] = ours.to_payloads([ANSWER])
    assert written == sdks.to_payloads([ANSWER])[0]
    assert sdks.from_payloads([written], [Answer]) == [ANSWER]
    assert ours.from_payloads(sdks.to_payloads([ANSWER]), [Answer]) == [ANSWER]


@pytest.mark.parametrize(
    ("converter", "adapters_built"),
    [(data_converter, 1), (pydantic_data_converter, 2)],
    ids=["keel", "sdk"],
)
def test_a_new_converter_reuses_the_type_adapters_built_before(
    monkeypatch: pytest.MonkeyPatch, converter: DataConverter, adapters_built: int
) -> None:
    class Fresh(BaseModel):  # a type no converter has seen
        n: int

    built: list[object] = []
    make_adapter = TypeAdapter.__init__

    def counting(self: TypeAdapter[object], *args: object, **kwargs: object) -> None:
        built.append(args[0] if args else None)
        make_adapter(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(TypeAdapter, "__init__", counting)
    new_converter = converter.payload_converter_class  # what the worker makes per run
    payload = new_converter().to_payloads([Fresh(n=1)])
    for _ in range(2):  # two workflow runs, each with the converter the worker makes it
        assert new_converter().from_payloads(payload, [Fresh]) == [Fresh(n=1)]
    assert built.count(Fresh) == adapters_built
