"""The actions' JSON Schema (``policies.actions.action_json_schema``) comes from the action types and
agrees with ``parse_action`` on what is valid."""

from __future__ import annotations

import jsonschema
import pytest

from policies.actions import ACTION_TYPES, ActionError, action_json_schema, parse_action

GOOD = [
    {"type": "move", "x": 0.5, "y": 0},
    {"type": "click", "x": 1, "y": 0.25, "button": "right", "count": 2},
    {"type": "mouse_down", "x": 0.1, "y": 0.2},
    {"type": "mouse_up", "x": 0.1, "y": 0.2, "button": "middle"},
    {"type": "drag", "x": 0.1, "y": 0.2, "x2": 0.9, "y2": 0.8},
    {"type": "scroll", "x": 0.5, "y": 0.5, "dy": -3},
    {"type": "key", "keys": "ctrl+shift+t"},
    {"type": "type", "text": "hello\tworld\n"},
    {"type": "wait", "seconds": 0.5},
    {"type": "done"},
]
BAD = [
    {"type": "teleport"},
    {"type": "move", "x": 1.5, "y": 0},
    {"type": "move", "x": 0.5},
    {"type": "move", "x": 0.5, "y": 0.5, "z": 1},
    {"type": "click", "x": 0.5, "y": 0.5, "button": "thumb"},
    {"type": "click", "x": 0.5, "y": 0.5, "count": 4},
    {"type": "scroll", "x": 0.5, "y": 0.5, "dy": 101},
    {"type": "type", "text": ""},
    {"type": "type", "text": "x" * 1001},
    {"type": "wait", "seconds": 61},
    {"type": "key", "keys": ""},
    {"type": "done", "x": 0.5},
]


def test_every_type_and_field_has_a_schema():
    schema = action_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert [s["properties"]["type"]["const"] for s in schema["oneOf"]] == list(ACTION_TYPES)
    click = action_json_schema("click", with_type=False)
    assert "type" not in click["properties"] and click["required"] == ["x", "y"]
    assert click["properties"]["count"]["default"] == 1
    with pytest.raises(ActionError):
        action_json_schema("teleport")


@pytest.mark.parametrize("obj", GOOD, ids=lambda o: o["type"])
def test_schema_accepts_what_parse_action_accepts(obj):
    parse_action(obj)
    jsonschema.validate(obj, action_json_schema())


@pytest.mark.parametrize("obj", BAD, ids=lambda o: str(o)[:40])
def test_schema_rejects_what_parse_action_rejects(obj):
    with pytest.raises(ActionError):
        parse_action(obj)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(obj, action_json_schema())
