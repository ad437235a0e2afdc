"""Templates and conditions (workflows/templates.py): pure data lookups, never code."""

from __future__ import annotations

from typing import Any

import pytest

from workflows.definition import Predicate
from workflows.templates import matches, render_text, render_value

CONTEXT: dict[str, Any] = {
    "input": {
        "topic": "tides",
        "n": 5,
        "flag": False,
        "nothing": None,
        "title": "{{ input.secret }}",
        "secret": "s3cr3t",
    },
    "nodes": {
        "search": {"output": {"items": ["first", {"url": "https://x.test"}], "count": 2}},
        "write": {"output": "a poem"},
    },
}


# -- render_text --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("About {{ input.topic }}", "About tides"),
        ("{{input.topic}}/{{   input.n   }}", "tides/5"),
        ("{{ nodes.write.output }}", "a poem"),
        ("{{ nodes.search.output.items.0 }}", "first"),
        ("{{ nodes.search.output.items.1.url }}", "https://x.test"),
        # Data that is not text renders as JSON, keys sorted.
        (
            "{{ nodes.search.output }}",
            '{"count": 2, "items": ["first", {"url": "https://x.test"}]}',
        ),
        ("{{ input.flag }} {{ input.n }}", "false 5"),
        # Missing values and null render as nothing.
        ("[{{ input.missing }}][{{ input.nothing }}][{{ nodes.search.output.items.9 }}]", "[][][]"),
        ("no placeholders", "no placeholders"),
    ],
)
def test_render_text_fills_placeholders(template: str, expected: str) -> None:
    assert render_text(template, CONTEXT) == expected


def test_rendered_values_are_not_rendered_again() -> None:
    # A value that looks like a template stays text: no second pass can reach the secret.
    assert render_text("Title: {{ input.title }}", CONTEXT) == "Title: {{ input.secret }}"


# -- sandboxing: a path reaches data, nothing else ----------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "input.__class__",
        "input.__class__.__mro__",
        "input.topic.__class__",
        "input.topic.upper",  # a method of str
        "input.items",  # a method of dict, not a key
        "nodes.search.output.items.__len__",
        "nodes.search.output.items.-1",  # only plain indexes
        "__builtins__",
        "input.topic.0",  # text is not indexed
        "lipsum.__globals__",
    ],
)
def test_a_path_reaches_only_keys_and_list_indexes(path: str) -> None:
    assert render_text("{{ " + path + " }}", CONTEXT) == ""
    assert render_value("{{ " + path + " }}", CONTEXT) is None
    assert not matches(Predicate(path=path, op="exists"), CONTEXT)


@pytest.mark.parametrize(
    "template",
    [
        "{{ __import__('os').system('touch /tmp/keel-pwned') }}",
        "{{ input.n + 1 }}",
        "{{ input['topic'] }}",
        "{{ input.topic | upper }}",
        "{{ input.topic() }}",
        "{% for x in input %}{% endfor %}",
        "{{ input.topic.__class__.__init__.__globals__['os'] }}",
    ],
)
def test_anything_but_a_path_is_left_as_text(template: str) -> None:
    # Not a placeholder at all: nothing is evaluated, the text stays as written.
    assert render_text(template, CONTEXT) == template
    assert render_value(template, CONTEXT) == template


def test_lookups_never_call_or_get_attributes() -> None:
    class Loud(dict[str, Any]):
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"attribute {name} was read")

        def __getitem__(self, key: str) -> Any:
            if key == "boom":
                raise AssertionError("a key that was not asked for was read")
            return super().__getitem__(key)

    context = {"input": Loud(text="hi")}
    assert render_text("{{ input.text }} {{ input.upper }}", context) == "hi "


# -- render_value -------------------------------------------------------------------------


def test_a_whole_placeholder_keeps_the_type() -> None:
    assert render_value("{{ input.n }}", CONTEXT) == 5
    assert render_value("  {{ input.flag }} ", CONTEXT) is False
    assert (
        render_value("{{ nodes.search.output }}", CONTEXT) == CONTEXT["nodes"]["search"]["output"]
    )
    assert render_value("{{ input.missing }}", CONTEXT) is None


def test_render_value_walks_dicts_and_lists() -> None:
    arguments = {
        "q": "{{ input.topic }}",
        "limit": "{{ input.n }}",
        "tags": ["{{ input.topic }}", "n={{ input.n }}", 7, None, True],
        "nested": {"first": "{{ nodes.search.output.items.0 }}"},
    }
    assert render_value(arguments, CONTEXT) == {
        "q": "tides",
        "limit": 5,
        "tags": ["tides", "n=5", 7, None, True],
        "nested": {"first": "first"},
    }


def test_render_value_does_not_change_its_argument() -> None:
    arguments = {"q": "{{ input.topic }}"}
    render_value(arguments, CONTEXT)
    assert arguments == {"q": "{{ input.topic }}"}


# -- matches ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "op", "value", "expected"),
    [
        ("input.n", "eq", 5, True),
        ("input.n", "eq", "5", False),
        ("input.topic", "eq", "tides", True),
        ("input.n", "ne", 4, True),
        ("input.n", "ne", 5, False),
        ("input.n", "gt", 4, True),
        ("input.n", "gt", 5, False),
        ("input.n", "gte", 5, True),
        ("input.n", "gte", 6, False),
        ("input.n", "lt", 6, True),
        ("input.n", "lt", 5, False),
        ("input.n", "lte", 5, True),
        ("input.n", "lte", 4, False),
        ("input.topic", "gt", "apple", True),  # text orders as text
        ("input.topic", "in", ["tides", "waves"], True),
        ("input.topic", "in", ["waves"], False),
        ("input.topic", "in", "riptides", True),  # a substring of text
        ("input.topic", "in", {"tides": 1}, True),  # a key of an object
        ("nodes.search.output.items", "contains", "first", True),
        ("nodes.search.output.items", "contains", "second", False),
        ("input.topic", "contains", "ide", True),
        ("nodes.search.output", "contains", "count", True),
        ("input.n", "exists", None, True),
        ("input.flag", "exists", True, True),  # false is a value
        ("input.nothing", "exists", None, False),  # null is not
        ("input.missing", "exists", None, False),
        ("input.missing", "exists", False, True),
        ("input.n", "exists", False, False),
    ],
)
def test_every_operator(path: str, op: str, value: Any, expected: bool) -> None:
    assert matches(Predicate(path=path, op=op, value=value), CONTEXT) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize("op", ["eq", "gt", "gte", "lt", "lte", "in", "contains"])
def test_a_missing_path_matches_nothing_but_ne(op: str) -> None:
    assert not matches(Predicate(path="input.missing", op=op, value=1), CONTEXT)  # type: ignore[arg-type]
    assert matches(Predicate(path="input.missing", op="ne", value=1), CONTEXT)


@pytest.mark.parametrize(
    ("path", "op", "value"),
    [
        ("input.topic", "gt", 3),  # text against a number cannot be ordered
        ("input.n", "lte", "5"),
        ("input.topic", "contains", 3),  # a number looked for in text
        ("input.n", "in", "12345"),
        ("input.n", "contains", 5),  # a number contains nothing
        ("input.n", "in", 5),
        ("nodes.search.output.items", "in", {"first": 1}),  # an unhashable key
    ],
)
def test_values_that_cannot_be_compared_do_not_match(path: str, op: str, value: Any) -> None:
    assert matches(Predicate(path=path, op=op, value=value), CONTEXT) is False  # type: ignore[arg-type]
