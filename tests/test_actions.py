import json
import math

import pytest

from policies.actions import (
    ACTION_TYPES,
    MAX_TEXT,
    ActionError,
    Click,
    Drag,
    Key,
    Type,
    parse_action,
)

VALID = [
    {"type": "move", "x": 0.1, "y": 0.9},
    {"type": "click", "x": 0.5, "y": 0.5, "button": "right", "count": 2},
    {"type": "mouse_down", "x": 0.0, "y": 1.0},
    {"type": "mouse_up", "x": 1.0, "y": 0.0, "button": "middle"},
    {"type": "drag", "x": 0.1, "y": 0.2, "x2": 0.3, "y2": 0.4},
    {"type": "scroll", "x": 0.5, "y": 0.5, "dy": -3},
    {"type": "key", "keys": "ctrl+shift+t"},
    {"type": "type", "text": "hello world"},
    {"type": "wait", "seconds": 0.5},
    {"type": "done"},
]


@pytest.mark.parametrize("obj", VALID, ids=[o["type"] for o in VALID])
def test_json_round_trip(obj):
    a = parse_action(obj)
    j = a.to_json()
    assert parse_action(json.loads(json.dumps(j))) == a
    for k, v in obj.items():
        assert j[k] == v


def test_every_type_has_a_valid_example():
    assert {o["type"] for o in VALID} == set(ACTION_TYPES)


@pytest.mark.parametrize(
    "obj, field",
    [
        ({"type": "teleport"}, "type"),
        ({"x": 0.5}, "type"),
        ({"type": "click", "x": 0.5}, "y"),
        ({"type": "click", "x": 1.5, "y": 0.5}, "x"),
        ({"type": "click", "x": -0.01, "y": 0.5}, "x"),
        ({"type": "click", "x": math.nan, "y": 0.5}, "x"),
        ({"type": "click", "x": 0.5, "y": math.inf}, "y"),
        ({"type": "click", "x": "0.5", "y": 0.5}, "x"),
        ({"type": "click", "x": True, "y": 0.5}, "x"),
        ({"type": "click", "x": 0.5, "y": 0.5, "button": "thumb"}, "button"),
        ({"type": "click", "x": 0.5, "y": 0.5, "count": 7}, "count"),
        ({"type": "click", "x": 0.5, "y": 0.5, "colour": "red"}, "colour"),
        ({"type": "drag", "x": 0.1, "y": 0.2, "x2": 2, "y2": 0.4}, "x2"),
        ({"type": "key", "keys": "ctrl+hyperspace"}, "keys"),
        ({"type": "key", "keys": ""}, "keys"),
        ({"type": "key", "keys": "a+a"}, "keys"),
        ({"type": "type", "text": "x" * (MAX_TEXT + 1)}, "text"),
        ({"type": "type", "text": ""}, "text"),
        ({"type": "type", "text": "bell\x07"}, "text"),
        ({"type": "type", "text": 42}, "text"),
        ({"type": "wait", "seconds": -1}, "seconds"),
        ({"type": "wait", "seconds": 1e9}, "seconds"),
        ({"type": "scroll", "x": 0.5, "y": 0.5, "dy": 1.5}, "dy"),
        ({"type": "scroll", "x": 0.5, "y": 0.5, "dy": 10_000}, "dy"),
    ],
)
def test_bad_actions_name_the_field(obj, field):
    with pytest.raises(ActionError) as e:
        parse_action(obj)
    assert e.value.field == field
    assert field in str(e.value)


def test_not_an_object():
    with pytest.raises(ActionError, match="JSON object"):
        parse_action(["click", 0.5, 0.5])


def test_key_combo_is_canonical():
    assert Key("Ctrl+Shift+T").keys == "ctrl+shift+t"
    assert Key("ctrl++").parts == ["ctrl", "+"]
    assert Key("enter").parts == ["enter"]


def test_constructors_validate_too():
    with pytest.raises(ActionError):
        Click(2.0, 0.5)
    with pytest.raises(ActionError):
        Drag(0.1, 0.1, 0.5, float("nan"))
    with pytest.raises(ActionError):
        Type("")
    assert Click(0.25, 0.75).point == (0.25, 0.75)


HUGE = 10**400  # past float's range: float() raises OverflowError


@pytest.mark.parametrize(
    "obj, field",
    [
        ({"type": "move", "x": HUGE, "y": 0.5}, "x"),
        ({"type": "click", "x": 0.5, "y": -HUGE}, "y"),
        ({"type": "drag", "x": 0.1, "y": 0.1, "x2": 0.5, "y2": HUGE}, "y2"),
        ({"type": "wait", "seconds": HUGE}, "seconds"),
        ({"type": "wait", "seconds": 10**5000}, "seconds"),  # past str()'s 4,300-digit limit too
        ({"type": "click", "x": 0.5, "y": 0.5, "count": HUGE}, "count"),
        ({"type": "scroll", "x": 0.5, "y": 0.5, "dx": -HUGE}, "dx"),
        ({"type": HUGE}, "type"),
        ({"type": "key", "keys": HUGE}, "keys"),
    ],
)
def test_huge_integers_are_action_errors_naming_the_field(obj, field):
    """A 400-digit coordinate (JSON allows it) is an ActionError naming the field, not an OverflowError;
    the message describes the number instead of printing its digits."""
    with pytest.raises(ActionError) as e:
        parse_action(obj)
    assert e.value.field == field
    assert len(str(e.value)) < 200
    if any(isinstance(v, int) and v.bit_length() > 10_000 for v in obj.values()):
        return  # json.dumps itself refuses an integer past 4,300 digits
    with pytest.raises(ActionError) as e:  # the same value read from JSON text
        parse_action(json.loads(json.dumps(obj)))
    assert e.value.field == field
