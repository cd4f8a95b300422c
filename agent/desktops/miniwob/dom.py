"""What the MiniWoB++ experts read from a page and the actions they build from it (shared by
:mod:`agent.desktops.miniwob.experts` and the expert modules beside it).

A *probe* is one JavaScript round-trip that returns the page state an expert needs (element boxes
in task-area pixels, values, task globals) and ``done`` (MiniWoB's ``WOB_DONE_GLOBAL``).
:data:`SNAPSHOT_JS` is the common probe (the interactive elements); :func:`probe` builds a
task's own from :data:`PRELUDE`'s helpers.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from agent.desktops.miniwob.browser import TASK_H, TASK_W
from policies.actions import Action, Click, Key, MouseDown, MouseUp, Move, Type

# One round-trip: the interactive elements of the page with their boxes and state, plus task globals.
SNAPSHOT_JS = r"""
const wrap = document.body;
const els = [];
for (const el of wrap.querySelectorAll('button, input, textarea, label, a, span.alink, h3, .widget, select')) {
  const r = el.getBoundingClientRect();
  const st = getComputedStyle(el);
  const lab = el.closest ? el.closest('label') : null;
  els.push({tag: el.tagName.toLowerCase(), id: el.id || '', type: (el.getAttribute('type') || '').toLowerCase(),
    dtype: el.getAttribute('data-type') || '', cls: (typeof el.className === 'string') ? el.className : '',
    text: (el.innerText || el.textContent || '').trim(), title: el.getAttribute('title') || '',
    label: lab ? (lab.innerText || lab.textContent || '').trim() : '',
    x: r.left, y: r.top, w: r.width, h: r.height, checked: !!el.checked,
    value: (el.value === undefined) ? null : String(el.value), focused: document.activeElement === el,
    sel: (el.selectionStart === undefined || el.selectionStart === null) ? null : [el.selectionStart, el.selectionEnd],
    visible: r.width > 0 && r.height > 0 && st.visibility !== 'hidden' && st.display !== 'none'});
}
const jq = window.jQuery;
return {els: els,
  animating: jq ? jq(':animated').length : 0,
  accordion_open: jq ? jq('.ui-accordion-content:visible').length : 0,
  pushed: (typeof buttonsPushed !== 'undefined') ? buttonsPushed.slice() : null,
  extra: (function () { return /*EXTRA*/null; })(),
  done: !!WOB_DONE_GLOBAL};
"""


class ExpertError(RuntimeError):
    """The expert cannot find what the task asks for on the page."""


def snapshot(driver) -> dict:
    return driver.execute_script(SNAPSHOT_JS)


def _norm(x: float, y: float) -> tuple[float, float]:
    return min(1.0, max(0.0, x / TASK_W)), min(1.0, max(0.0, y / TASK_H))


def click(e: dict) -> Click:
    """Click the centre of element ``e`` (its box clipped to the task area)."""
    x0, y0 = max(0.0, e["x"]), max(0.0, e["y"])
    x1, y1 = min(float(TASK_W), e["x"] + e["w"]), min(float(TASK_H), e["y"] + e["h"])
    if x1 <= x0 or y1 <= y0:
        raise ExpertError(f"element <{e.get('tag', '?')} id={e.get('id', '')!r} text={e.get('text', '')[:20]!r}> "
                          "is outside the task area")
    return Click(*_norm((x0 + x1) / 2, (y0 + y1) / 2))


def find(s: dict, pred: Callable[[dict], bool], what: str) -> dict:
    for e in s["els"]:
        if e["visible"] and pred(e):
            return e
    raise ExpertError(f"not on the page: {what}")


def quoted(utterance: str, pattern: str) -> str:
    m = re.search(pattern, utterance)
    if not m:
        raise ExpertError(f"cannot parse the instruction {utterance!r}")
    return m.group(1)


def fill(s: dict, field: dict, text: str) -> Action | None:
    """The next action that makes ``field`` hold exactly ``text``; None once it does."""
    value = field["value"] or ""
    if value == text:
        return None
    if not field["focused"]:
        return click(field)
    sel = field["sel"]
    if value and not (sel and sel[0] == 0 and sel[1] == len(value)):
        return Key("ctrl+a")  # select what is there, so typing replaces it
    return Type(text)


def by_id(s: dict, id_: str) -> dict:
    return find(s, lambda e: e["id"] == id_, f"#{id_}")


def submit(s: dict) -> Click:
    return click(by_id(s, "subbtn"))




def snapshot_js(extra: str) -> str:
    """:data:`SNAPSHOT_JS` whose ``extra`` is the JavaScript expression ``extra`` (task globals)."""
    return SNAPSHOT_JS.replace("/*EXTRA*/null", extra)


# Helpers for task probes: B(el) its box (the first line box for inline text) and visibility,
# Q(selector, f) every match as {x, y, w, h, visible, text, ...f(el)}.
PRELUDE = r"""
const B = (el) => {
  const rs = el.getClientRects();
  const r = (rs.length && getComputedStyle(el).display === 'inline') ? rs[0] : el.getBoundingClientRect();
  let vis = r.width > 0 && r.height > 0;
  for (let e = el; vis && e && e.nodeType === 1; e = e.parentElement) {
    const st = getComputedStyle(e);
    if (st.display === 'none' || st.visibility === 'hidden') vis = false;
  }
  return {x: r.left, y: r.top, w: r.width, h: r.height, visible: vis};
};
const Q = (sel, f) => Array.from(document.querySelectorAll(sel)).map(
  (el) => Object.assign(B(el), {tag: el.tagName.toLowerCase(), id: el.id || '', text: (el.textContent || '').trim()},
                        f ? f(el) : {}));
const F = (sel) => { const el = document.querySelector(sel); return el ? Q(sel)[0] : null; };
const HIT = (sel) => {  // the box of the part of an element that the pointer reaches (not covered or clipped)
  const el = document.querySelector(sel); if (!el) return null;
  const r = el.getBoundingClientRect(); const xs = [], ys = [];
  for (let y = Math.floor(r.top); y < r.bottom; y++) for (let x = Math.floor(r.left); x < r.right; x++) {
    const e = document.elementFromPoint(x + 0.5, y + 0.5); if (e && (e === el || el.contains(e))) { xs.push(x); ys.push(y); } }
  if (!xs.length) return null;
  const x0 = Math.min(...xs), x1 = Math.max(...xs) + 1, y0 = Math.min(...ys), y1 = Math.max(...ys) + 1;
  return {x: x0, y: y0, w: x1 - x0, h: y1 - y0, visible: true, tag: el.tagName.toLowerCase(), id: el.id || '', text: ''};
};
const BLANK = () => {  // a spot where a click lands on nothing interactive (the page background or the instruction)
  for (const [x, y] of [[155, 205], [5, 205], [155, 45], [5, 45], [80, 205]]) {
    const e = document.elementFromPoint(x, y);
    if (e && ['BODY', 'HTML'].includes(e.tagName) || (e && ['wrap', 'area', 'query'].includes(e.id))) return [x, y];
  }
  return null;
};
const FIELD = (sel) => { const el = document.querySelector(sel); if (!el) return null;
  return Object.assign(Q(sel)[0], {value: String(el.value), focused: document.activeElement === el,
    sel: (el.selectionStart === undefined || el.selectionStart === null) ? null : [el.selectionStart, el.selectionEnd]}); };
"""


def probe(body: str) -> str:
    """A task probe: ``body`` is a JavaScript function body returning an object (PRELUDE's helpers
    in scope); ``done`` is added."""
    return f"{PRELUDE}\nconst out = (function () {{ {body} }})() || {{}};\nout.done = !!WOB_DONE_GLOBAL;\nreturn out;"


def point(x: float, y: float) -> Click:
    """A click at task-area pixel ``(x, y)``."""
    if not (0 <= x <= TASK_W and 0 <= y <= TASK_H):
        raise ExpertError(f"({x:.0f}, {y:.0f}) is outside the task area")
    return Click(*_norm(x, y))


def centre(e: dict) -> tuple[float, float]:
    return e["x"] + e["w"] / 2, e["y"] + e["h"] / 2


def drag_path(x0: float, y0: float, x1: float, y1: float, moves: int = 12) -> list[Action]:
    """Press at ``(x0, y0)``, move there in ``moves`` steps, release: one action per pointer event
    (sortable lists reorder by at most one item per move)."""
    out: list[Action] = [MouseDown(*_norm(x0, y0))]
    for i in range(1, moves + 1):
        f = i / moves
        out.append(Move(*_norm(x0 + (x1 - x0) * f, y0 + (y1 - y0) * f)))
    out.append(MouseUp(*_norm(x1, y1)))
    return out
