"""Actions <-> training labels and model outputs -> Actions.

A label is a flat dict of numbers (one per head; -1 = not applicable, ignored by the loss).
Points are labelled as (pointer token, offset inside its box): the glimpse that holds the
point if any, else the global patch under it.
"""

from __future__ import annotations

import numpy as np

from policies.actions import Action, Click, Done, Drag, Key, MouseDown, MouseUp, Move, Scroll, Type, Wait
from policies.pixel.configuration import PixelConfig

LABEL_FIELDS = ("type", "button", "count", "key", "scroll_x", "scroll_y", "wait", "ptr0", "ptr1",
                "span_start", "span_end", "word")  # word: where the word naming ptr0's target starts


def global_boxes(cfg: PixelConfig) -> np.ndarray:
    nx, ny = cfg.global_w // cfg.patch, cfg.global_h // cfg.patch
    ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    xs, ys = xs.ravel().astype(np.float32), ys.ravel().astype(np.float32)
    return np.stack([xs / nx, ys / ny, (xs + 1) / nx, (ys + 1) / ny], -1)


def locate(cfg: PixelConfig, x: float, y: float, boxes: np.ndarray, mask: np.ndarray) -> tuple[int, float, float]:
    """The pointer token for point (x, y) and the offset inside its box (each in [0, 1])."""
    ng = (cfg.global_w // cfg.patch) * (cfg.global_h // cfg.patch)
    inside = mask & (boxes[:, 0] <= x) & (x < boxes[:, 2]) & (boxes[:, 1] <= y) & (y < boxes[:, 3])
    idx = np.flatnonzero(inside)
    if len(idx):
        i = int(idx[0])
        b = boxes[i]
        token = ng + i
    else:
        nx, ny = cfg.global_w // cfg.patch, cfg.global_h // cfg.patch
        gx, gy = min(nx - 1, int(x * nx)), min(ny - 1, int(y * ny))
        token = gy * nx + gx
        b = np.array([gx / nx, gy / ny, (gx + 1) / nx, (gy + 1) / ny], np.float32)
    ox = (x - b[0]) / max(1e-6, b[2] - b[0])
    oy = (y - b[1]) / max(1e-6, b[3] - b[1])
    return token, float(np.clip(ox, 0, 1)), float(np.clip(oy, 0, 1))


def action_label(cfg: PixelConfig, action: Action, boxes: np.ndarray, mask: np.ndarray,
                 raw_text: bytes, prev_type_end: int = -1) -> tuple[dict, np.ndarray]:
    """Labels for one action; returns (ints, offsets (2, 2) float)."""
    lab = dict.fromkeys(LABEL_FIELDS, -1)
    off = np.zeros((2, 2), np.float32)
    lab["type"] = cfg.action_types.index(action.type) if action.type in cfg.action_types else -1
    if hasattr(action, "button"):
        lab["button"] = cfg.buttons.index(action.button)
    if isinstance(action, Click):
        lab["count"] = action.count - 1
    pts = []
    if action.point is not None:
        pts.append(action.point)
    if isinstance(action, Drag):
        pts.append((action.x2, action.y2))
    for j, (x, y) in enumerate(pts):
        tok, ox, oy = locate(cfg, x, y, boxes, mask)
        lab[f"ptr{j}"] = tok
        off[j] = (ox, oy)
    if isinstance(action, Key):
        lab["key"] = cfg.keys.index(action.keys) if action.keys in cfg.keys else -1
    if isinstance(action, Scroll):
        m = cfg.scroll_max
        lab["scroll_x"] = int(np.clip(action.dx, -m, m)) + m
        lab["scroll_y"] = int(np.clip(action.dy, -m, m)) + m
    if isinstance(action, Wait):
        lab["wait"] = int(np.argmin([abs(b - action.seconds) for b in cfg.wait_bins]))
    if isinstance(action, Type):
        s, e = type_span(raw_text, action.text, prev_type_end)
        if e >= cfg.max_text:
            s, e = -1, -1
        lab["span_start"], lab["span_end"] = s, e
    return lab, off


def _clip01(v: float) -> float:
    return float(min(1.0, max(0.0, v)))


def decode(cfg: PixelConfig, out, raw_text: bytes, i: int = 0) -> list[Action]:
    """Argmax decoding of sample ``i`` of a :class:`PixelOutput` into at most one valid Action."""
    kind = cfg.action_types[int(out.type_logits[i].argmax())]

    def point(j: int) -> tuple[float, float]:
        tok = int(out.pointer_logits[i, j].argmax())
        b = out.boxes[i, tok].tolist()
        ox, oy = out.offsets[i, j, tok].clamp(0, 1).tolist()
        return _clip01(b[0] + ox * (b[2] - b[0])), _clip01(b[1] + oy * (b[3] - b[1]))

    button = cfg.buttons[int(out.button_logits[i].argmax())]
    if kind == "move":
        return [Move(*point(0))]
    if kind == "click":
        return [Click(*point(0), button=button, count=int(out.count_logits[i].argmax()) + 1)]
    if kind == "mouse_down":
        return [MouseDown(*point(0), button=button)]
    if kind == "mouse_up":
        return [MouseUp(*point(0), button=button)]
    if kind == "drag":
        x, y = point(0)
        x2, y2 = point(1)
        return [Drag(x, y, x2, y2, button=button)]
    if kind == "scroll":
        m = cfg.scroll_max
        sx, sy = (int(v) - m for v in out.scroll_logits[i].argmax(-1).tolist())
        return [Scroll(*point(0), dx=sx, dy=sy)]
    if kind == "key":
        return [Key(cfg.keys[int(out.key_logits[i].argmax())])]
    if kind == "type":
        s = int(out.span_start[i].argmax())
        e_logits = out.span_end[i].clone()
        e_logits[:s] = -1e9
        # A span that starts inside a quoted string ends inside it: labels copy typed text from
        # quotes (type_span), so a span over the closing quote is never one a demo taught.
        close = raw_text.find(b'"', s) if raw_text[:s].count(b'"') % 2 == 1 else -1
        if close > s:
            e_logits[close:] = -1e9
        e = int(e_logits.argmax())
        text = raw_text[s: e + 1].decode("utf-8", errors="ignore")
        try:
            return [Type(text)]
        except ValueError:
            return []
    if kind == "wait":
        return [Wait(float(cfg.wait_bins[int(out.wait_logits[i].argmax())]))]
    return [Done()]


NO_WORD = -2  # a sample's ``word`` label where its demo names targets but none for this step


def history_features(cfg: PixelConfig, actions, raw_text: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The last ``cfg.history`` actions (oldest first) as (types (H,), points (H, 3)).

    A pointer action contributes its point (a drag its end point); a ``type`` action the byte
    span it typed from the instruction (start/L, end/L), so the model knows what is typed already.
    Missing slots have type ``len(action_types)`` and presence 0.
    """
    h = cfg.history
    types = np.full((h,), len(cfg.action_types), np.int64)
    pts = np.zeros((h, 3), np.float32)
    recent = list(actions)[-h:]
    prev_end = -1
    spans = []
    for a in list(actions)[-(h + 8):]:
        if isinstance(a, Type):
            s, e = type_span(raw_text, a.text, prev_end)
            prev_end = e if e >= 0 else prev_end
            spans.append((a, s, e))
    span_of = {id(a): (s, e) for a, s, e in spans}
    off = h - len(recent)
    for i, a in enumerate(recent):
        j = off + i
        types[j] = cfg.action_types.index(a.type) if a.type in cfg.action_types else len(cfg.action_types)
        if isinstance(a, Drag):
            pts[j] = (a.x2, a.y2, 1.0)
        elif a.point is not None:
            pts[j] = (a.point[0], a.point[1], 1.0)
        elif isinstance(a, Type) and id(a) in span_of and span_of[id(a)][0] >= 0:
            s, e = span_of[id(a)]
            pts[j] = (s / cfg.max_text, e / cfg.max_text, 1.0)
    return types, pts


def type_span(raw: bytes, text: str, prev_end: int = -1) -> tuple[int, int]:
    """Where ``text`` is copied from in the instruction: right after the previous typed span if it
    continues there, else the first occurrence inside double quotes, else the first occurrence."""
    t = text.encode("utf-8")
    if not t:
        return -1, -1
    starts = []
    i = raw.find(t)
    while i >= 0:
        starts.append(i)
        i = raw.find(t, i + 1)
    if not starts:
        return -1, -1
    if prev_end >= 0 and prev_end + 1 in starts:
        s = prev_end + 1
    else:
        quoted = [s for s in starts if raw[:s].count(b'"') % 2 == 1]
        s = quoted[0] if quoted else starts[0]
    return s, s + len(t) - 1


def last_type_end(raw: bytes, actions) -> int:
    prev_end = -1
    for a in actions:
        if isinstance(a, Type):
            s, e = type_span(raw, a.text, prev_end)
            if e >= 0:
                prev_end = e
    return prev_end
