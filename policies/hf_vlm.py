"""``hf-vlm``: local vision-language computer-use checkpoints (Qwen2-VL, Qwen2.5-VL, UI-TARS) as a Policy.

Spec: ``hf-vlm:<folder>`` (a local Hugging Face model folder with its processor files; nothing is
downloaded) or ``hf-vlm:<shape>`` (one of :data:`SHAPES`: the Qwen2-VL architecture at that size
with random weights and an in-memory byte-level tokenizer, for latency and plumbing tests — its
outputs are noise and usually fail to parse, which is reported as a clear error). An optional
``#coords=relative|absolute`` suffix overrides the coordinate convention.

Each step: the BGRA frame -> RGB PIL image -> the model's processor (resized the Qwen2-VL way:
``smart_resize`` to multiples of 28 within ``max_pixels``) -> greedy generation of up to
``max_new_tokens`` -> :func:`parse_vlm_output` -> Actions with coordinates normalised to [0, 1].

Output forms understood (see :func:`parse_vlm_output`): UI-TARS ``Thought: ... Action: click(
start_box='(x,y)')`` with ``left_double``, ``right_single``, ``drag``, ``hotkey``, ``type``,
``scroll``, ``wait``, ``finished``, ``call_user``; the ``<|box_start|>(x,y)<|box_end|>``,
``<point>x y</point>`` and ``[x1, y1, x2, y2]`` box forms — read by ByteDance's ``ui-tars`` package
(``parse_action_to_structure_output``; the ``vlm`` extra, imported on first use) and mapped to our
Actions here; ``pyautogui.click(x, y)``-style code and Qwen2.5-VL ``<tool_call>{"name":
"computer_use", "arguments": {...}}</tool_call>``, which it does not read, parsed here.
Coordinates: ``relative`` = 0-1000 over the image (Qwen2-VL, UI-TARS-1.5), ``absolute`` = pixels
of the resized input image (Qwen2.5-VL); ``pyautogui`` floats all within [0, 1] are taken as
already normalised.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policies.actions import Action, ActionError, Click, Done, Drag, Key, Move, Scroll, Type, Wait
from policies.base import Observation, PolicyError

COORDS = ("relative", "absolute")
SCROLL_NOTCHES = 5  # UI-TARS's own executor scrolls 5 notches per scroll action
WAIT_SECONDS = 5.0  # "wait() #Sleep for 5s" in the UI-TARS action space


class VLMParseError(PolicyError):
    """The model's output holds no action we can perform; the message quotes the output."""


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------

UI_TARS_INSTALL_HINT = "pip install 'digital-worker[vlm]'  (or: pip install 'ui-tars>=0.5.1,<0.6')"


class VLMDependencyError(PolicyError):
    """A package the hf-vlm adapter needs is not installed; the message says how to install it."""


_NUM = re.compile(r"-?\d+(?:\.\d+)?")
_CALL = re.compile(r"(?<![\w.])((?:pyautogui\.)?[A-Za-z_][A-Za-z_0-9]*)\s*\(")
_TOOL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
_UITARS = {"click", "left_single", "left_double", "right_single", "double_click", "right_click", "drag",
           "select", "hotkey", "press", "keydown", "type", "scroll", "wait", "finished", "call_user",
           "mouse_move", "move_to", "hover", "moveto", "left_click"}
_UITARS_CALL = re.compile(r"(?<![\w.])(?:" + "|".join(sorted(_UITARS)) + r")\s*\(")
_LIST_BOX = re.compile(r"((?:start|end)_box|(?:start_|end_)?point)(\s*=\s*)(['\"])\[([^\]'\"]*)\]\3")
_PYAUTOGUI = {"click", "doubleClick", "rightClick", "tripleClick", "moveTo", "dragTo", "write", "typewrite",
              "press", "hotkey", "scroll"}
_log = logging.getLogger(__name__)
_ui_tars_parser = None


def ui_tars_parser():
    """``ui_tars.action_parser`` (PyPI ``ui-tars``, the ``vlm`` extra), imported on first use;
    :class:`VLMDependencyError` with the install command where it is missing."""
    global _ui_tars_parser
    if _ui_tars_parser is None:
        try:
            from ui_tars import action_parser
        except ImportError:
            raise VLMDependencyError("hf-vlm: reading UI-TARS actions needs the ui-tars package: "
                                     + UI_TARS_INSTALL_HINT) from None
        # ui-tars 0.5.1 print()s every action string it cannot parse. Our stdout may be a protocol
        # channel (`dw mcp` over stdio), so its prints go to our log instead: a module global named
        # `print` shadows the builtin for that module alone (no sys.stdout swap, safe across threads).
        action_parser.print = lambda *a, **_: _log.debug(" ".join(map(str, a)))
        _ui_tars_parser = action_parser
    return _ui_tars_parser


def _quote(text: str, n: int = 160) -> str:
    t = text.strip().replace("\n", "\\n")
    return repr(t if len(t) <= n else t[: n - 3] + "...")


@dataclass
class _Space:
    width: float
    height: float
    coords: str

    def norm(self, x: float, y: float, already: bool = False) -> tuple[float, float]:
        if already:
            nx, ny = x, y
        elif self.coords == "relative":
            nx, ny = x / 1000.0, y / 1000.0
        else:
            nx, ny = x / self.width, y / self.height
        for name, v in (("x", nx), ("y", ny)):
            if not -0.02 <= v <= 1.02:
                raise VLMParseError(f"{name} coordinate {v:.3f} (normalised, {self.coords} convention) is off the image")
        return min(1.0, max(0.0, nx)), min(1.0, max(0.0, ny))


def _clean(text: str) -> str:
    """Special tokens out (the policy decodes with them: ``<|box_start|>``, a final ``<|im_end|>``),
    ``<point>x y</point>`` / ``<bbox>x1 y1 x2 y2</bbox>`` as ``(x,y)`` / ``(x1,y1,x2,y2)``. ui-tars
    reads neither the box tokens (it expects them skipped) nor ``<bbox>`` nor non-integer points."""
    text = re.sub(r"<\|[A-Za-z_]+\|>", "", text)
    text = re.sub(r"<point>\s*(-?[\d.]+)[\s,]+(-?[\d.]+)\s*</point>", r"(\1,\2)", text)
    text = re.sub(r"<bbox>\s*(-?[\d.]+)[\s,]+(-?[\d.]+)[\s,]+(-?[\d.]+)[\s,]+(-?[\d.]+)\s*</bbox>",
                  r"(\1,\2,\3,\4)", text)
    return text


def _point(value: Any, space: _Space, what: str) -> tuple[float, float]:
    """'(x,y)', '[x1, y1, x2, y2]' (its centre), or a 2/4-number list -> normalised point."""
    if isinstance(value, list | tuple):
        nums = [float(v) for v in value]
    else:
        nums = [float(v) for v in _NUM.findall(str(value))]
    if len(nums) == 4:
        nums = [(nums[0] + nums[2]) / 2, (nums[1] + nums[3]) / 2]
    if len(nums) != 2:
        raise VLMParseError(f"{what} {str(value)!r} is not a point (x,y) or a box [x1, y1, x2, y2]")
    return space.norm(nums[0], nums[1])


# --- UI-TARS: the ui-tars package reads the text, _from_ui_tars maps its structures to Actions ---

def _ui_tars_text(body: str) -> str | None:
    """``body`` in the form ui-tars reads (``... Action: call(...)``), or None without a UI-TARS call.

    Adds what ui-tars 0.5.1 does not do itself: ``Action:`` followed by a newline (it splits on
    ``"Action: "``), a bare call with no ``Action:`` line, and list boxes ``start_box='[x1, y1, x2,
    y2]'`` (the UI-TARS-1.0 prompt's form; it reads only parenthesised numbers)."""
    body = _LIST_BOX.sub(lambda m: f"{m[1]}{m[2]}{m[3]}({m[4]}){m[3]}", body)
    body = re.sub(r"Action:\s*", "Action: ", body)
    if "Action: " in body:
        return body
    m = _UITARS_CALL.search(body)
    return None if m is None else "Action: " + body[m.start():]


def _ui_tars_structures(text: str, space: _Space) -> list[dict]:
    """ui-tars' ``parse_action_to_structure_output``: ``[{"action_type", "action_inputs", ...}]``
    with ``start_box`` / ``end_box`` as ``'[x1, y1, x2, y2]'`` strings of the model's numbers
    divided by ``factor`` (a point repeated).

    ``factor`` 1 and its ``qwen2vl`` mode: the raw numbers come back and :class:`_Space` applies
    the convention, as for tool calls and pyautogui code (relative: / 1000; absolute: / the image
    size), centre first, so a box's centre is bit-for-bit what it was. Its ``qwen25vl`` mode is not
    used: it runs ``smart_resize`` (its own min/max pixels) on the size it is given, while we know
    the exact size the model saw (from ``image_grid_thw``): resizing that again moves small or
    non-multiple-of-28 sizes (224x224 -> 280x280)."""
    parser = ui_tars_parser()
    try:
        return parser.parse_action_to_structure_output(text, 1, int(space.height), int(space.width),
                                                       model_type="qwen2vl")
    except Exception as e:  # third-party parsing of arbitrary model text: ValueError, AssertionError, ...
        raise VLMParseError(f"no action found in the model output {_quote(text)} "
                            f"(ui-tars: {type(e).__name__}: {e})") from None


def _from_ui_tars(item: dict, space: _Space) -> list[Action]:
    """One ui-tars structure -> our Actions (checks what the package does not: points, ranges,
    directions, keys)."""
    name = str(item.get("action_type") or "")
    kw = item.get("action_inputs") or {}

    def box(key: str) -> tuple[float, float] | None:
        if key not in kw:
            return None
        try:
            nums = ast.literal_eval(str(kw[key]))  # the package writes str(list of floats)
        except (ValueError, SyntaxError):
            raise VLMParseError(f"{key} {kw[key]!r} is not a point (x,y) or a box [x1, y1, x2, y2]") from None
        return _point(nums if isinstance(nums, list | tuple) else [nums], space, key)

    start = box("start_box")
    if name in ("click", "left_single", "left_click", "left_double", "double_click", "right_single", "right_click"):
        if start is None:
            raise VLMParseError(f"{name}() has no start_box / point")
        button = "right" if name.startswith("right") else "left"
        count = 2 if name in ("left_double", "double_click") else 1
        return [Click(*start, button=button, count=count)]
    if name in ("mouse_move", "move_to", "hover", "moveto"):
        if start is None:
            raise VLMParseError(f"{name}() has no start_box / point")
        return [Move(*start)]
    if name in ("drag", "select"):
        end = box("end_box")
        if start is None or end is None:
            raise VLMParseError(f"{name}() needs start_box and end_box")
        return [Drag(*start, *end)]
    if name in ("hotkey", "press", "keydown"):
        key = kw.get("key", kw.get("keys"))
        if not isinstance(key, str) or not key.strip():
            raise VLMParseError(f"{name}() has no key")
        parts = [p for p in re.split(r"[\s+]+", key.strip().lower()) if p]
        return [Key("+".join(parts))]
    if name == "type":
        content = kw.get("content", kw.get("text"))
        if not isinstance(content, str):
            raise VLMParseError("type() has no content")
        enter = content.endswith("\n")
        body = content[:-1] if enter else content
        out: list[Action] = [Type(body)] if body else []
        return out + ([Key("enter")] if enter else [])
    if name == "scroll":
        direction = str(kw.get("direction", "down")).strip().lower()
        x, y = start if start is not None else (0.5, 0.5)
        d = {"down": (0, SCROLL_NOTCHES), "up": (0, -SCROLL_NOTCHES), "right": (SCROLL_NOTCHES, 0),
             "left": (-SCROLL_NOTCHES, 0)}.get(direction)
        if d is None:
            raise VLMParseError(f"scroll direction {direction!r} is not up, down, left or right")
        return [Scroll(x, y, dx=d[0], dy=d[1])]
    if name == "wait":
        return [Wait(WAIT_SECONDS)]
    if name in ("finished", "call_user"):
        return [Done()]
    return []  # not in the action space we perform: reported below if nothing else is found


# --- pyautogui code and Qwen2.5-VL tool calls: forms ui-tars does not read, parsed here ---

def _calls(text: str) -> list[ast.Call]:
    """Every syntactically valid call expression in ``text``, in order."""
    out, pos = [], 0
    while True:
        m = _CALL.search(text, pos)
        if not m:
            return out
        start, found = m.start(), None
        for end in [i + 1 for i, ch in enumerate(text) if ch == ")" and i >= m.end() - 1]:
            try:
                node = ast.parse(text[start:end].strip(), mode="eval").body
            except SyntaxError:
                continue
            if isinstance(node, ast.Call):
                found = (node, end)
                break
        if found is None:
            pos = m.end()
            continue
        out.append(found[0])
        pos = found[1]


def _literal(node: ast.AST, name: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise VLMParseError(f"argument {name} = {ast.unparse(node)!r} is not a literal") from None


def _pyautogui_calls(body: str, space: _Space, cursor: tuple[float, float] | None) -> list[Action]:
    out: list[Action] = []
    for node in _calls(body):
        f = node.func
        if not (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "pyautogui"
                and f.attr in _PYAUTOGUI):
            continue
        kw = {k.arg: _literal(k.value, k.arg) for k in node.keywords if k.arg}
        args = [_literal(a, f"#{i}") for i, a in enumerate(node.args)]
        out += _pyautogui(f.attr, kw, args, space)
        if isinstance(out[-1], Drag) and cursor is not None:
            d = out[-1]
            out[-1] = Drag(cursor[0], cursor[1], d.x2, d.y2)
    return out


def _pyautogui(name: str, kw: dict[str, Any], args: list[Any], space: _Space) -> list[Action]:
    def xy(i: int = 0) -> tuple[float, float] | None:
        x, y = kw.get("x", args[i] if len(args) > i else None), kw.get("y", args[i + 1] if len(args) > i + 1 else None)
        if isinstance(x, tuple | list) and y is None:
            x, y = x[0], x[1]
        if x is None or y is None:
            return None
        try:
            x, y = float(x), float(y)
        except (TypeError, ValueError):
            raise VLMParseError(f"pyautogui.{name}: x, y = {x!r}, {y!r} are not numbers") from None
        already = isinstance(kw.get("x", args[i] if len(args) > i else None), float) and 0 <= x <= 1 and 0 <= y <= 1
        return space.norm(x, y, already=already)

    if name in ("click", "doubleClick", "rightClick", "tripleClick"):
        p = xy()
        if p is None:
            raise VLMParseError(f"pyautogui.{name}() without a position")
        button = "right" if name == "rightClick" else str(kw.get("button", "left"))
        count = {"doubleClick": 2, "tripleClick": 3}.get(name, int(kw.get("clicks", 1)))
        return [Click(*p, button=button, count=count)]
    if name == "moveTo":
        p = xy()
        if p is None:
            raise VLMParseError("pyautogui.moveTo() without a position")
        return [Move(*p)]
    if name == "dragTo":
        p = xy()
        if p is None:
            raise VLMParseError("pyautogui.dragTo() without a position")
        return [Drag(*p, *p)]  # the start is wherever the pointer is; resolved by the caller
    if name in ("write", "typewrite"):
        text = kw.get("message", args[0] if args else None)
        if not isinstance(text, str):
            raise VLMParseError(f"pyautogui.{name}() without text")
        return [Type(text)]
    if name == "press":
        key = kw.get("keys", args[0] if args else None)
        if not isinstance(key, str):
            raise VLMParseError("pyautogui.press() without a key")
        return [Key(key.lower())]
    if name == "hotkey":
        keys = [a for a in args if isinstance(a, str)]
        if not keys:
            raise VLMParseError("pyautogui.hotkey() without keys")
        return [Key("+".join(k.lower() for k in keys))]
    if name == "scroll":
        clicks = kw.get("clicks", args[0] if args else None)
        if not isinstance(clicks, int | float):
            raise VLMParseError("pyautogui.scroll() without clicks")
        p = xy(1) or (0.5, 0.5)
        n = max(-20, min(20, int(round(clicks))))
        return [Scroll(*p, dy=-n)]  # pyautogui: positive scrolls up; ours: dy > 0 is down
    raise VLMParseError(f"unknown pyautogui call pyautogui.{name}()")


def _tool_call(obj: Any, space: _Space, cursor: tuple[float, float] | None) -> list[Action]:
    args = obj.get("arguments") if isinstance(obj, dict) else None
    if isinstance(args, str):
        args = json.loads(args)
    if not isinstance(args, dict) or "action" not in args:
        raise VLMParseError(f"tool call without arguments.action: {json.dumps(obj)[:120]}")
    a = args["action"]
    coord = args.get("coordinate")
    p = _point(coord, space, "coordinate") if coord is not None else None
    if a in ("left_click", "right_click", "middle_click", "double_click", "triple_click"):
        if p is None:
            raise VLMParseError(f"{a} without a coordinate")
        button = {"right_click": "right", "middle_click": "middle"}.get(a, "left")
        return [Click(*p, button=button, count={"double_click": 2, "triple_click": 3}.get(a, 1))]
    if a == "mouse_move":
        if p is None:
            raise VLMParseError("mouse_move without a coordinate")
        return [Move(*p)]
    if a == "left_click_drag":
        if p is None:
            raise VLMParseError("left_click_drag without a coordinate")
        sx, sy = cursor if cursor is not None else p
        return [Drag(sx, sy, *p)]
    if a == "type":
        return [Type(str(args.get("text", "")))]
    if a == "key":
        keys = args.get("keys", args.get("text"))
        keys = keys if isinstance(keys, list) else re.split(r"[\s+]+", str(keys or ""))
        keys = [str(k).lower() for k in keys if str(k).strip()]
        if not keys:
            raise VLMParseError("key without keys")
        return [Key("+".join(keys))]
    if a == "scroll":
        pixels = float(args.get("pixels", 0))
        x, y = p if p is not None else (0.5, 0.5)
        n = max(-20, min(20, int(round(pixels / 100)) or (1 if pixels > 0 else -1 if pixels < 0 else 0)))
        return [Scroll(x, y, dy=-n)]  # Qwen: positive pixels scroll up
    if a == "wait":
        return [Wait(min(float(args.get("time", WAIT_SECONDS)), WAIT_SECONDS))]
    if a in ("terminate", "answer"):
        return [Done()]
    raise VLMParseError(f"unknown computer_use action {a!r}")


def parse_vlm_output(text: str, image_size: tuple[int, int] = (1000, 1000), coords: str = "relative",
                     cursor: tuple[float, float] | None = None) -> list[Action]:
    """A model's text -> Actions with normalised coordinates; :class:`VLMParseError` if none.

    ``image_size`` is the (width, height) of the image the model saw (after its resize), used by
    the ``absolute`` convention; ``cursor`` (normalised) is the start of drags that name only the end.
    The UI-TARS action space is read by the ``ui-tars`` package (:class:`VLMDependencyError` without
    it); ``<tool_call>`` JSON and ``pyautogui`` code, which it does not read, here.
    """
    if coords not in COORDS:
        raise ValueError(f"coords must be one of {COORDS}, got {coords!r}")
    if not isinstance(text, str) or not text.strip():
        raise VLMParseError("the model produced no text")
    space = _Space(float(image_size[0]), float(image_size[1]), coords)
    try:
        tools = _TOOL.findall(text)
        if tools:
            out: list[Action] = []
            for body in tools:
                try:
                    obj = json.loads(body)
                except json.JSONDecodeError as e:
                    raise VLMParseError(f"tool call is not JSON ({e.msg}): {_quote(body)}") from None
                out += _tool_call(obj, space, cursor)
            return out
        body = _clean(text)
        unknown: list[str] = []
        if "pyautogui." in body:
            out = _pyautogui_calls(body.split("Action:", 1)[-1], space, cursor)
        else:
            ui = _ui_tars_text(body)
            out = []
            for item in _ui_tars_structures(ui, space) if ui is not None else []:
                actions = _from_ui_tars(item, space)
                out += actions
                unknown += [] if actions else [f"{item.get('action_type')}()"]
        if not out:
            why = f" ({', '.join(unknown)} not in the UI-TARS action space)" if unknown else ""
            raise VLMParseError(f"no action found in the model output {_quote(text)}{why}")
        return out
    except ActionError as e:
        raise VLMParseError(f"invalid action in the model output {_quote(text)}: {e}") from None
    except VLMParseError as e:
        if "model output" in str(e):
            raise
        raise VLMParseError(f"{e} in the model output {_quote(text)}") from None


# --------------------------------------------------------------------------------------------
# models: local folders, or Qwen2-VL shapes with random weights
# --------------------------------------------------------------------------------------------

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>", "<|box_start|>", "<|box_end|>")

# name -> (text config, vision config); the 2B/7B rows are Qwen2-VL-2B/7B's published dimensions.
SHAPES: dict[str, dict] = {
    "qwen2-vl-tiny": {"text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=None, mrope=[2, 3, 3]),
                      "vision": dict(depth=2, embed_dim=32, num_heads=2)},
    "qwen2-vl-small": {"text": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                                    num_attention_heads=8, num_key_value_heads=2, vocab_size=32000,
                                    mrope=[8, 12, 12]),
                       "vision": dict(depth=8, embed_dim=384, num_heads=6)},
    "qwen2-vl-2b": {"text": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                 num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                                 mrope=[16, 24, 24], tie=True),
                    "vision": dict(depth=32, embed_dim=1280, num_heads=16)},
    "qwen2-vl-7b": {"text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                 num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                                 mrope=[16, 24, 24]),
                    "vision": dict(depth=32, embed_dim=1280, num_heads=16)},
}


def byte_tokenizer():
    """A byte-level tokenizer built in memory (no files, no hub): 256 byte tokens + Qwen's specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=list(SPECIAL_TOKENS[1:]))
    fast.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return fast


def shape_config(shape: str, tokenizer):
    from transformers import Qwen2VLConfig

    if shape not in SHAPES:
        raise PolicyError(f"unknown hf-vlm shape {shape!r}; choose one of {', '.join(SHAPES)} or a model folder")
    t, v = dict(SHAPES[shape]["text"]), SHAPES[shape]["vision"]
    mrope, tie = t.pop("mrope"), t.pop("tie", False)
    t["vocab_size"] = max(t["vocab_size"] or 0, len(tokenizer))
    ids = {k: tokenizer.convert_tokens_to_ids(s) for k, s in
           (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = {**t, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
            "bos_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id, "max_position_embeddings": 32768}
    vision = {**v, "hidden_size": t["hidden_size"], "mlp_ratio": 4}
    return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tie, **ids)


def build_random(shape: str, seed: int = 0, dtype=None):
    """(model, processor) of ``shape`` with random weights and the in-memory tokenizer."""
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    try:
        from transformers import Qwen2VLImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers
        from transformers import Qwen2VLImageProcessor as ImageProcessor
    tok = byte_tokenizer()
    cfg = shape_config(shape, tok)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(cfg)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval(), QwenVLInputs(ImageProcessor(), tok)


class QwenVLInputs:
    """The Qwen2-VL processor's job, done directly (tokenizer + image processor): image patches
    and ``image_grid_thw`` from the image processor, and the prompt's ``<|image_pad|>`` expanded to
    one token per merged patch. Used where ``Qwen2VLProcessor`` cannot be built (it insists on a
    video processor, which needs torchvision)."""

    def __init__(self, image_processor, tokenizer):
        self.image_processor = image_processor
        self.tokenizer = tokenizer

    def __call__(self, text: list[str], images: list, return_tensors: str = "pt", images_kwargs: dict | None = None):
        from transformers import BatchFeature

        kw = dict(images_kwargs or {})
        if "max_pixels" in kw:  # older image processors take it as an attribute / in size
            mp = kw.pop("max_pixels")
            kw["size"] = {"shortest_edge": getattr(self.image_processor, "min_pixels", None) or 56 * 56,
                          "longest_edge": mp}
        img = self.image_processor(images=images, return_tensors=return_tensors, **kw)
        merge = getattr(self.image_processor, "merge_size", 2) ** 2
        counts = [int(g.prod()) // merge for g in img["image_grid_thw"]]
        out_text = []
        for t in text:
            for n in counts:
                t = t.replace("<|image_pad|>", "<|placeholder|>" * n, 1)
            out_text.append(t.replace("<|placeholder|>", "<|image_pad|>"))
        enc = self.tokenizer(out_text, return_tensors=return_tensors)
        return BatchFeature({**enc, **img})


PROMPT = """You are a GUI agent. You are given a task and your action history, with screenshots. You need to perform the next action to complete the task.
## Output Format
Thought: ...
Action: ...
## Action Space
click(start_box='<|box_start|>(x1,y1)<|box_end|>')
left_double(start_box='<|box_start|>(x1,y1)<|box_end|>')
right_single(start_box='<|box_start|>(x1,y1)<|box_end|>')
drag(start_box='<|box_start|>(x1,y1)<|box_end|>', end_box='<|box_start|>(x3,y3)<|box_end|>')
hotkey(key='')
type(content='')
scroll(start_box='<|box_start|>(x1,y1)<|box_end|>', direction='down or up or right or left')
wait()
finished()
## User Instruction
"""


class HFVLMPolicy:
    """A transformers vision-language model as a Policy (greedy decoding, one action per step).

    ``coords``: ``relative`` (0-1000) or ``absolute`` (pixels of the resized image). ``max_pixels``
    bounds the image the model sees (Qwen2-VL's processor resizes to multiples of 28 within it).
    ``on_parse_error``: ``raise`` (the loop logs a policy error naming the output and goes on) or
    ``skip`` (no action; the error is kept in ``last_error``). ``timings`` holds the last step's
    ``preprocess`` / ``generate`` / ``parse`` nanoseconds; ``last_output`` the decoded text.
    """

    def __init__(self, model, processor, *, name: str = "hf-vlm", coords: str = "relative",
                 max_new_tokens: int = 24, min_new_tokens: int = 0, max_pixels: int | None = 1280 * 28 * 28,
                 device: str = "cpu", on_parse_error: str = "raise"):
        if coords not in COORDS:
            raise PolicyError(f"coords must be one of {', '.join(COORDS)}, got {coords!r}")
        self.model = model.to(device).eval()
        self.processor = processor
        self.name = name
        self.coords = coords
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        self.max_pixels = max_pixels
        self.device = device
        self.on_parse_error = on_parse_error
        self.instruction = ""
        self.last_output = ""
        self.last_error = ""
        self.last_image_size: tuple[int, int] = (0, 0)
        self.timings: dict[str, int] = {}

    def reset(self, instruction: str) -> None:
        self.instruction = instruction

    def prompt(self) -> str:
        return ("<|im_start|>user\n" + PROMPT + self.instruction + "<|vision_start|><|image_pad|><|vision_end|>"
                "<|im_end|>\n<|im_start|>assistant\n")

    def inputs(self, frame) -> dict:
        from PIL import Image

        rgb = np.ascontiguousarray(frame.pixels[:, :, 2::-1])
        img = Image.fromarray(rgb)
        kw = {}
        if self.max_pixels:
            kw["images_kwargs"] = {"max_pixels": self.max_pixels}
        try:
            enc = self.processor(text=[self.prompt()], images=[img], return_tensors="pt", **kw)
        except TypeError:
            enc = self.processor(text=[self.prompt()], images=[img], return_tensors="pt")
        return enc

    def act(self, observation: Observation) -> list[Action]:
        import time

        import torch

        if observation.instruction != self.instruction:
            self.reset(observation.instruction)
        clock = time.perf_counter_ns
        t0 = clock()
        enc = self.inputs(observation.frame).to(self.device)
        grid = enc["image_grid_thw"][0].tolist()
        patch = getattr(self.processor.image_processor, "patch_size", 14)
        self.last_image_size = (int(grid[2]) * patch, int(grid[1]) * patch)
        t1 = clock()
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens,
                                      do_sample=False, pad_token_id=self.processor.tokenizer.pad_token_id)
        t2 = clock()
        new = out[0, enc["input_ids"].shape[1]:].tolist()
        n_vocab = len(self.processor.tokenizer)
        text = self.processor.tokenizer.decode([i for i in new if i < n_vocab], skip_special_tokens=False)
        self.last_output = text
        try:
            actions = parse_vlm_output(text, self.last_image_size, self.coords, observation.cursor)
            self.last_error = ""
        except VLMParseError as e:
            self.last_error = str(e)
            actions = None
            if self.on_parse_error == "raise":
                raise
        finally:
            t3 = clock()
            self.timings = {"preprocess": t1 - t0, "generate": t2 - t1, "parse": t3 - t2,
                            "new_tokens": len(new), "input_tokens": int(enc["input_ids"].shape[1])}
        return actions or []


def _default_coords(folder: Path, model_type: str) -> str:
    if model_type == "qwen2_5_vl" and "tars" not in folder.name.lower():
        return "absolute"
    return "relative"


def load_hf_vlm_policy(spec: str, device: str = "cpu", *, actions: bool = True, **kwargs) -> HFVLMPolicy:
    """``hf-vlm:<folder or shape>[#coords=relative|absolute]`` -> :class:`HFVLMPolicy`.

    ``actions``: the model's outputs will be read as actions, which needs the ``ui-tars`` package:
    checked here, before a model is loaded (:class:`VLMDependencyError`, a :class:`PolicyError`
    the CLI prints as one line). A caller that only asks the model other questions (the VLM
    conductor) passes False."""
    target = spec.split(":", 1)[1] if spec.startswith("hf-vlm:") else spec
    target, _, opts = target.partition("#")
    options = dict(o.split("=", 1) for o in opts.split("&") if "=" in o)
    coords = options.get("coords")
    if not target:
        raise PolicyError("hf-vlm needs a model folder or a shape: hf-vlm:<folder> or hf-vlm:qwen2-vl-tiny")
    folder = Path(target)
    if target not in SHAPES and not (folder / "config.json").is_file():
        raise PolicyError(f"hf-vlm:{target}: not a shape ({', '.join(SHAPES)}) nor a local model folder "
                          "with config.json (nothing is downloaded)")
    if actions:
        ui_tars_parser()
    if target in SHAPES:
        model, proc = build_random(target)
        return HFVLMPolicy(model, proc, name=f"hf-vlm:{target}", coords=coords or "relative", device=device,
                           **kwargs)
    try:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            proc = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        except (AttributeError, ImportError, ValueError):  # e.g. no torchvision for the video processor
            from transformers import AutoImageProcessor, AutoTokenizer

            proc = QwenVLInputs(AutoImageProcessor.from_pretrained(str(folder), local_files_only=True),
                                AutoTokenizer.from_pretrained(str(folder), local_files_only=True))
        model = AutoModelForImageTextToText.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise PolicyError(f"hf-vlm:{folder}: cannot load the model: {e}") from None
    coords = coords or _default_coords(folder, getattr(model.config, "model_type", ""))
    return HFVLMPolicy(model, proc, name=f"hf-vlm:{folder.name}", coords=coords, device=device, **kwargs)
