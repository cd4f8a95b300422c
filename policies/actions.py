"""Actions: small typed values with a stable JSON form and strict validation.

Coordinates are normalised to [0, 1] over the captured screen; only the executor turns
them into the operating system's input space. ``parse_action`` validates everything and
raises :class:`ActionError` naming the offending field; a bad action is never executed.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

MAX_TEXT = 1000
MAX_WAIT = 60.0
MAX_SCROLL = 100
MAX_CLICKS = 3
BUTTONS = ("left", "right", "middle")

MODIFIERS = ("ctrl", "shift", "alt", "cmd", "win", "super", "meta", "option", "fn")
NAMED_KEYS = (
    "enter", "return", "tab", "space", "backspace", "delete", "escape", "esc", "insert",
    "home", "end", "pageup", "pagedown", "up", "down", "left", "right",
    "capslock", "numlock", "scrolllock", "printscreen", "pause", "menu",
    "volumeup", "volumedown", "volumemute",
) + tuple(f"f{i}" for i in range(1, 25))
PRINTABLE_KEYS = tuple("abcdefghijklmnopqrstuvwxyz0123456789`-=[]\\;',./")
KEY_NAMES = frozenset(MODIFIERS + NAMED_KEYS + PRINTABLE_KEYS)


class ActionError(ValueError):
    """An action that failed validation. ``field`` names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def _show(value: Any) -> str:
    """A short form of a bad value for an error message: a huge integer is described, not printed
    (its digits could fill a screen, and past 4,300 digits ``str`` itself refuses)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _float(name: str, value: Any, what: str = "a number") -> float:
    """A JSON number as a finite float; bools, huge integers, NaN and infinities are ActionErrors."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ActionError(name, f"must be {what}, got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:  # an integer past float's range (about 309 digits)
        raise ActionError(name, f"must be finite, got {_show(value)}") from None
    if not math.isfinite(v):
        raise ActionError(name, f"must be finite, got {_show(value)}")
    return v


def _coord(name: str, value: Any) -> float:
    v = _float(name, value)
    if not 0.0 <= v <= 1.0:
        raise ActionError(name, f"must be within [0, 1] (normalised screen coordinate), got {v}")
    return v


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ActionError(name, f"must be an integer, got {_show(value)}")
    if not lo <= value <= hi:
        raise ActionError(name, f"must be within [{lo}, {hi}], got {_show(value)}")
    return value


def _button(value: Any) -> str:
    if value not in BUTTONS:
        raise ActionError("button", f"must be one of {', '.join(BUTTONS)}, got {_show(value)}")
    return value


def split_combo(combo: str) -> list[str]:
    """``"ctrl+shift+t"`` → ``["ctrl", "shift", "t"]``; a trailing ``"++"`` is the plus key."""
    if combo == "+":
        return ["+"]
    if combo.endswith("++"):
        return combo[:-2].split("+") + ["+"] if len(combo) > 2 else ["+"]
    return combo.split("+")


def normalise_combo(combo: Any) -> str:
    """Validate a key combo such as ``"ctrl+shift+t"`` and return its canonical lower-case form."""
    if not isinstance(combo, str) or not combo:
        raise ActionError("keys", f"must be a non-empty string such as 'ctrl+c', got {_show(combo)}")
    if len(combo) > 64:
        raise ActionError("keys", "combo is longer than 64 characters")
    parts = split_combo(combo.lower())
    out = []
    for p in parts:
        p = p.strip()
        if p not in KEY_NAMES and p != "+":
            raise ActionError("keys", f"unknown key name {p!r} in {combo!r}")
        out.append(p)
    if len(set(out)) != len(out):
        raise ActionError("keys", f"repeated key in {combo!r}")
    # A chord of modifiers alone is legal (e.g. ctrl+shift switching layouts).
    return "+".join(out)


@dataclass(frozen=True, slots=True)
class Action:
    """Base of every action. ``type`` is the stable JSON tag."""

    type: ClassVar[str] = ""

    def to_json(self) -> dict:
        out: dict[str, Any] = {"type": self.type}
        for f in fields(self):
            out[f.name] = getattr(self, f.name)
        return out

    @property
    def point(self) -> tuple[float, float] | None:
        x = getattr(self, "x", None)
        y = getattr(self, "y", None)
        return (x, y) if x is not None and y is not None else None


@dataclass(frozen=True, slots=True)
class Move(Action):
    type: ClassVar[str] = "move"
    x: float
    y: float

    def __post_init__(self) -> None:
        _coord("x", self.x), _coord("y", self.y)


@dataclass(frozen=True, slots=True)
class Click(Action):
    type: ClassVar[str] = "click"
    x: float
    y: float
    button: str = "left"
    count: int = 1

    def __post_init__(self) -> None:
        _coord("x", self.x), _coord("y", self.y), _button(self.button)
        _int("count", self.count, 1, MAX_CLICKS)


@dataclass(frozen=True, slots=True)
class MouseDown(Action):
    type: ClassVar[str] = "mouse_down"
    x: float
    y: float
    button: str = "left"

    def __post_init__(self) -> None:
        _coord("x", self.x), _coord("y", self.y), _button(self.button)


@dataclass(frozen=True, slots=True)
class MouseUp(Action):
    type: ClassVar[str] = "mouse_up"
    x: float
    y: float
    button: str = "left"

    def __post_init__(self) -> None:
        _coord("x", self.x), _coord("y", self.y), _button(self.button)


@dataclass(frozen=True, slots=True)
class Drag(Action):
    """Press at (x, y), move to (x2, y2), release."""

    type: ClassVar[str] = "drag"
    x: float
    y: float
    x2: float
    y2: float
    button: str = "left"

    def __post_init__(self) -> None:
        _coord("x", self.x), _coord("y", self.y), _coord("x2", self.x2), _coord("y2", self.y2)
        _button(self.button)


@dataclass(frozen=True, slots=True)
class Scroll(Action):
    """Scroll at (x, y) by whole notches: dy > 0 scrolls down, dx > 0 scrolls right."""

    type: ClassVar[str] = "scroll"
    x: float
    y: float
    dx: int = 0
    dy: int = 0

    def __post_init__(self) -> None:
        _coord("x", self.x), _coord("y", self.y)
        _int("dx", self.dx, -MAX_SCROLL, MAX_SCROLL), _int("dy", self.dy, -MAX_SCROLL, MAX_SCROLL)


@dataclass(frozen=True, slots=True)
class Key(Action):
    """Press and release a key combo such as ``"enter"`` or ``"ctrl+shift+t"``."""

    type: ClassVar[str] = "key"
    keys: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", normalise_combo(self.keys))

    @property
    def parts(self) -> list[str]:
        return split_combo(self.keys)


@dataclass(frozen=True, slots=True)
class Type(Action):
    type: ClassVar[str] = "type"
    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise ActionError("text", f"must be a string, got {type(self.text).__name__}")
        if not self.text:
            raise ActionError("text", "must not be empty")
        if len(self.text) > MAX_TEXT:
            raise ActionError("text", f"is {len(self.text)} characters, more than the limit of {MAX_TEXT}")
        bad = [c for c in self.text if (ord(c) < 32 and c not in "\t\n") or ord(c) == 127]
        if bad:
            raise ActionError("text", f"contains control character {bad[0]!r}")


@dataclass(frozen=True, slots=True)
class Wait(Action):
    type: ClassVar[str] = "wait"
    seconds: float

    def __post_init__(self) -> None:
        s = _float("seconds", self.seconds, "a finite number")
        if not 0 <= s <= MAX_WAIT:
            raise ActionError("seconds", f"must be within [0, {MAX_WAIT}], got {s}")


@dataclass(frozen=True, slots=True)
class Done(Action):
    """The policy declares the task finished."""

    type: ClassVar[str] = "done"


ACTION_TYPES: dict[str, type[Action]] = {
    cls.type: cls for cls in (Move, Click, MouseDown, MouseUp, Drag, Scroll, Key, Type, Wait, Done)
}


def parse_action(obj: Any) -> Action:
    """Build an :class:`Action` from its JSON form, validating every field."""
    if not isinstance(obj, dict):
        raise ActionError("action", f"must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in ACTION_TYPES:
        raise ActionError("type", f"unknown action type {_show(kind)}; expected one of {', '.join(ACTION_TYPES)}")
    cls = ACTION_TYPES[kind]
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    for key in obj:
        if key != "type" and key not in names:
            raise ActionError(str(key)[:40], f"unknown field for action {kind!r}")
    for key in required:
        if key not in obj:
            raise ActionError(key, f"is required for action {kind!r}")
    kwargs = {k: v for k, v in obj.items() if k != "type"}
    try:
        return cls(**kwargs)
    except ActionError:
        raise
    except (TypeError, ValueError) as e:  # pragma: no cover - dataclass signature errors
        raise ActionError("action", str(e)) from None


# -- JSON Schema ---------------------------------------------------------------------------------
# Generated from the action types above, for MCP tools and LLM tool-calling; parse_action stays the
# validator (it also checks key names, control characters and huge integers the schema cannot say).

_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "x": {"type": "number", "minimum": 0, "maximum": 1, "description": "normalised x over the screen: 0 left edge, 1 right"},
    "y": {"type": "number", "minimum": 0, "maximum": 1, "description": "normalised y over the screen: 0 top edge, 1 bottom"},
    "x2": {"type": "number", "minimum": 0, "maximum": 1, "description": "normalised x where the drag ends"},
    "y2": {"type": "number", "minimum": 0, "maximum": 1, "description": "normalised y where the drag ends"},
    "button": {"type": "string", "enum": list(BUTTONS)},
    "count": {"type": "integer", "minimum": 1, "maximum": MAX_CLICKS, "description": "clicks (2: double-click)"},
    "dx": {"type": "integer", "minimum": -MAX_SCROLL, "maximum": MAX_SCROLL, "description": "notches; > 0 scrolls right"},
    "dy": {"type": "integer", "minimum": -MAX_SCROLL, "maximum": MAX_SCROLL, "description": "notches; > 0 scrolls down"},
    "keys": {"type": "string", "minLength": 1, "maxLength": 64,
             "description": "a key combo joined by '+', e.g. 'enter', 'ctrl+shift+t'; names: "
                            + ", ".join(k for k in MODIFIERS + NAMED_KEYS if not k[1:].isdigit()) + ", f1-f24, single characters"},
    "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT,
             "description": "text to type (printable characters, tab and newline)"},
    "seconds": {"type": "number", "minimum": 0, "maximum": MAX_WAIT},
}


def action_json_schema(kind: str | None = None, *, with_type: bool = True) -> dict[str, Any]:
    """The JSON Schema of one action type (``kind``), or of any action (a ``oneOf`` over all).

    ``with_type=False`` leaves the ``type`` tag out of one type's schema (a tool named after the
    action takes only its fields). Every field of every action type has a schema here, so the
    action types stay the one source.
    """
    if kind is None:
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Action",
                "oneOf": [action_json_schema(k) for k in ACTION_TYPES]}
    if kind not in ACTION_TYPES:
        raise ActionError("type", f"unknown action type {kind!r}; expected one of {', '.join(ACTION_TYPES)}")
    cls = ACTION_TYPES[kind]
    props: dict[str, Any] = {"type": {"const": kind}} if with_type else {}
    required = ["type"] if with_type else []
    for f in fields(cls):
        schema = dict(_FIELD_SCHEMAS[f.name])
        if f.default is MISSING:
            required.append(f.name)
        else:
            schema["default"] = f.default
        props[f.name] = schema
    doc = (cls.__doc__ or "").strip()
    out: dict[str, Any] = {"type": "object", "title": kind, "properties": props, "required": required,
                           "additionalProperties": False}
    if doc and not doc.startswith(f"{cls.__name__}("):  # dataclass's generated signature is no description
        out["description"] = doc.splitlines()[0]
    return out
