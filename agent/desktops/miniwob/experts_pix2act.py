"""Scripted DOM experts for the MiniWoB++ tasks of Pix2Act's evaluation set beyond the first 17
(registered in :data:`agent.desktops.miniwob.experts.EXPERTS`; the task list is
:data:`agent.desktops.miniwob.tasklists.PIX2ACT59`).

Each expert is a pure function of one probe result (``PROBES[task]``, a JavaScript round-trip
built with :func:`agent.desktops.miniwob.dom.probe`) and the utterance, returning the next
action(s) in task-area coordinates normalised to [0, 1]. Probes read what the page shows (element
boxes, values) and, where the answer is not in the DOM, what the page draws (count-sides reads the
canvas) or the task's own data tables (click-checkboxes-soft's synonyms, number-checkboxes'
patterns). Tasks that share the 17's snapshot reuse their experts.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable

from agent.desktops.miniwob.dom import (
    ExpertError,
    _norm,
    centre,
    click,
    drag_path,
    fill,
    find,
    point,
    probe,
    quoted,
    snapshot_js,
    submit,
)
from policies.actions import Action, Key, MouseUp, Move, Scroll, Type

Expert = Callable[[dict, str], list[Action]]
EXPERTS: dict[str, Expert] = {}
PROBES: dict[str, str] = {}


def expert(task: str, js: str | None = None):
    """Register ``fn`` as ``task``'s expert, reading the page with ``js`` (default: the common snapshot)."""
    def deco(fn: Expert) -> Expert:
        EXPERTS[task] = fn
        if js is not None:
            PROBES[task] = js
        return fn
    return deco


def _first(items: list[dict], pred: Callable[[dict], bool], what: str) -> dict:
    for e in items:
        if e.get("visible", True) and pred(e):
            return e
    raise ExpertError(f"not on the page: {what}")


def _field_then_submit(s: dict, field: dict | None, text: str, sub: dict | None) -> list[Action]:
    if field is None or sub is None:
        raise ExpertError("the text field or the Submit button is missing")
    a = fill(s, field, text)
    return [a] if a is not None else [click(sub)]


# --- checkboxes ------------------------------------------------------------------------------------
def _tick_by(s: dict, want: Callable[[str], bool]) -> list[Action]:
    for e in s["els"]:
        if e["tag"] == "input" and e["type"] == "checkbox" and e["visible"] and e["checked"] != want(e["label"]):
            return [click(e)]
    return [submit(s)]


@expert("click-checkboxes-soft", snapshot_js("(typeof SYNONYMS !== 'undefined') ? SYNONYMS : null"))
def click_checkboxes_soft(s: dict, u: str) -> list[Action]:
    words = [w.strip() for w in quoted(u, r"Select words similar to (.*) and click Submit").split(",")]
    groups = s.get("extra") or []
    if not groups:
        raise ExpertError("the page's synonym table is missing")

    def want(label: str) -> bool:
        return any(label in g and any(w in g for w in words) for g in groups)
    return _tick_by(s, want)


@expert("number-checkboxes", probe("""
  return {boxes: Q('#area input[type=checkbox]', (el) => ({checked: el.checked})),
          patterns: (typeof PATTERNS !== 'undefined') ? PATTERNS : null, sub: F('#subbtn')};"""))
def number_checkboxes(s: dict, u: str) -> list[Action]:
    digit = int(quoted(u, r'Draw the number "(\d)"'))
    pattern = (s.get("patterns") or [])[digit]
    boxes = s["boxes"]
    for i, row in enumerate(pattern):
        for j, on in enumerate(row):
            b = boxes[i * 4 + j]
            if b["checked"] != bool(on):
                return [click(b)]
    return [click(s["sub"])]


# --- sections, tabs, links, trees, menus -------------------------------------------------------------
@expert("click-collapsible-2-nodelay", probe("""
  const secs = Array.from(document.querySelectorAll('#area .ui-accordion-content'));
  return {heads: Q('#area h3'),
          links: Q('#area .alink', (el) => ({sec: secs.indexOf(el.closest('.ui-accordion-content'))}))};"""))
def click_collapsible_2(s: dict, u: str) -> list[Action]:
    word = quoted(u, r'click on the link "(.*)"')
    links = [e for e in s["links"] if e["text"] == word]
    if not links:
        raise ExpertError(f"no link {word!r}")
    for e in links:
        if e["visible"] and e["y"] + e["h"] <= 210:
            return [click(e)]
    return [click(s["heads"][links[0]["sec"]])]


_TABS_JS = probe("""
  return {tabs: Q('#area ul li a', (el) => ({href: el.getAttribute('href')})),
          links: Q('#area .alink', (el) => ({panel: (el.closest('[id^=tabs-]') || {}).id || ''}))};""")


def click_tab_2(s: dict, u: str) -> list[Action]:
    word = quoted(u, r'click on the link "(.*)"')
    links = [e for e in s["links"] if e["text"] == word]
    for e in links:
        if e["visible"] and e["y"] + e["h"] <= 210:
            return [click(e)]
    if not links:  # click-tab-2-medium empties tab 2: clicking that tab is then the answer
        return [click(_first(s["tabs"], lambda e: e["href"] == "#tabs-2", "Tab #2"))]
    return [click(_first(s["tabs"], lambda e: e["href"] == "#" + links[0]["panel"], f"the tab of {word!r}"))]


for _t in ("click-tab-2", "click-tab-2-easy", "click-tab-2-medium", "click-tab-2-hard"):
    expert(_t, _TABS_JS)(click_tab_2)


@expert("navigate-tree", probe("""
  return {spans: Q('#tree span', (el) => {
    let opener = null;
    const chain = [];
    for (let li = el.parentElement.parentElement.closest('li'); li; li = li.parentElement.closest('li')) chain.push(li);
    for (const li of chain.reverse()) {
      if (li.classList.contains('expandable')) { const h = li.querySelector(':scope > .hitarea'); opener = h ? B(h) : null; break; }
    }
    return {opener: opener};
  })};"""))
def navigate_tree(s: dict, u: str) -> list[Action]:
    name = quoted(u, r'named "(.*)"')
    spans = [e for e in s["spans"] if e["text"] == name]
    for e in spans:
        if e["visible"]:
            return [click(e)]
    for e in spans:
        if e["opener"] and e["opener"]["visible"]:
            return [click(e["opener"])]
    raise ExpertError(f"no way to {name!r} in the tree")


@expert("click-pie-nodelay", probe("""
  return {titles: Q('#divWheel text'), spread: Q('#divWheel [id*=spreader]')};"""))
def click_pie(s: dict, u: str) -> list[Action]:
    label = quoted(u, r'labeled "(.*)"')
    for e in s["titles"]:
        if e["text"] == label and e["w"] >= 4:
            return [click(e)]
    spread = [e for e in s["spread"] if e["visible"] and e["w"] > 2]
    if not spread:
        raise ExpertError("the pie menu's centre is not on the page")
    return [click(max(spread, key=lambda e: e["w"] * e["h"]))]


@expert("choose-date-nodelay", probe("""
  const dp = document.getElementById('ui-datepicker-div');
  const open = !!dp && getComputedStyle(dp).display !== 'none';
  return {input: FIELD('#datepicker'), sub: F('#subbtn'), open: open,
          month: open ? (F('.ui-datepicker-month') || {}).text : null, year: open ? (F('.ui-datepicker-year') || {}).text : null,
          prev: F('.ui-datepicker-prev'), next: F('.ui-datepicker-next'),
          days: Q('#ui-datepicker-div td[data-handler=selectDay]', (el) => ({m: +el.getAttribute('data-month'),
                                                                             yr: +el.getAttribute('data-year')}))};"""))
def choose_date(s: dict, u: str) -> list[Action]:
    q = quoted(u, r"Select (\d\d/\d\d/\d{4}) as the date")
    m, d, y = (int(p) for p in q.split("/"))
    if s["input"]["value"] == q:
        return [click(s["sub"])]
    if not s["open"]:
        return [click(s["input"])]
    months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December"]
    shown = (int(s["year"]), months.index(s["month"]) + 1)
    if shown < (y, m):
        return [click(s["next"])]
    if shown > (y, m):
        return [click(s["prev"])]
    return [click(_first(s["days"], lambda e: e["text"] == str(d) and e["m"] == m - 1 and e["yr"] == y, f"day {d}"))]


@expert("email-inbox-delete", probe("""
  return {main: F('#main'), threads: Q('#main .email-thread', (el) => ({
    sender: el.querySelector('.email-sender').textContent.trim(),
    trash: B(el.querySelector('.trash')), star: B(el.querySelector('.star'))}))};"""))
def email_inbox_icon(s: dict, u: str) -> list[Action]:
    name = quoted(u, r"Find the email by (.*) and click the")
    icon = "trash" if "trash icon" in u else "star"
    t = _first(s["threads"], lambda e: e["sender"] == name, f"an email by {name}")[icon]
    main = s["main"]
    cx, cy = main["x"] + main["w"] / 2, main["y"] + main["h"] / 2
    if t["y"] < main["y"]:
        return [Scroll(cx / 160, cy / 210, 0, -1)]
    if t["y"] + t["h"] > main["y"] + main["h"]:
        return [Scroll(cx / 160, cy / 210, 0, 1)]
    return [click(t)]


EXPERTS["email-inbox-important"] = email_inbox_icon
PROBES["email-inbox-important"] = PROBES["email-inbox-delete"]


# --- colours and shapes --------------------------------------------------------------------------
@expert("click-color", probe("return {boxes: Q('#area .color', (el) => ({color: el.getAttribute('data-color')}))};"))
def click_color(s: dict, u: str) -> list[Action]:
    color = quoted(u, r"Click on the (.*) colored box")
    return [click(_first(s["boxes"], lambda e: e["color"] == color, f"the {color} box"))]


@expert("click-shades", probe("""
  return {shades: Q('#area span', (el) => ({color: el.getAttribute('data-color'), on: el.classList.contains('selected')})),
          sub: F('#submit')};"""))
def click_shades(s: dict, u: str) -> list[Action]:
    color = quoted(u, r"shades of (\w+)")
    for e in s["shades"]:
        if e["on"] != (e["color"] == color):
            return [click(e)]
    return [click(s["sub"])]


_SHAPES_JS = """
  const svg = document.getElementById('area_svg');
  const shapes = svg ? Array.from(svg.children).filter((el) => el.id !== 'shape-container').map((el) => {
    const tag = el.tagName.toLowerCase(); const bb = el.getBBox();
    const dim = tag === 'text' ? parseFloat(el.getAttribute('font-size')) : bb.width;
    return Object.assign(B(el), {tag: tag, text: (el.textContent || '').trim(), color: el.getAttribute('fill'), dim: dim});
  }) : [];
"""


def _shape(e: dict) -> tuple[str, str, str, str]:
    """(size, colour, type, text) of a drawn shape, as shapes.js describes it."""
    kind = {"rect": "rectangle", "circle": "circle", "polygon": "triangle"}.get(e["tag"])
    if kind:
        typ, text = "shape", kind
    else:
        typ, text = ("digit" if e["text"].isdigit() else "letter"), e["text"]
    return ("large" if e["dim"] >= 15 else "small"), e["color"], typ, text


_COLORS = ("red", "green", "blue", "aqua", "black", "magenta", "yellow")


def _matches(e: dict, desc: str) -> bool:
    """shapes.shapeMatchesText for a description such as 'large red item' or 'small e'."""
    words = desc.split()
    size, color, typ, text = _shape(e)
    what = words[-1]
    rest = words[:-1]
    if rest and rest[0] in ("large", "small") and rest.pop(0) != size:
        return False
    if rest and rest[0] in _COLORS and rest.pop(0) != color:
        return False
    return what == "item" or what in (typ, text)


@expert("click-shape", probe(_SHAPES_JS + "return {shapes: shapes};"))
def click_shape(s: dict, u: str) -> list[Action]:
    desc = quoted(u, r"Click on a (.*)$").strip()
    return [click(_first(s["shapes"], lambda e: _matches(e, desc), f"a {desc}"))]


@expert("count-shape", probe(_SHAPES_JS + "return {shapes: shapes, buttons: Q('#count-buttons button')};"))
def count_shape(s: dict, u: str) -> list[Action]:
    desc = quoted(u, r"How many (.*)s are there\?")
    n = sum(_matches(e, desc) for e in s["shapes"])
    return [click(_first(s["buttons"], lambda e: e["text"] == str(n), f"the button {n}"))]


@expert("identify-shape", probe(_SHAPES_JS + """
  return {shapes: shapes, buttons: Q('#area-buttons button', (el) => ({kind: el.getAttribute('data-type')}))};"""))
def identify_shape(s: dict, u: str) -> list[Action]:
    if not s["shapes"]:
        raise ExpertError("no figure drawn")
    _, _, typ, text = _shape(s["shapes"][0])
    kind = text if typ == "shape" else typ
    return [click(_first(s["buttons"], lambda e: e["kind"] == kind, f"the {kind} button"))]


@expert("count-sides", probe("""
  const c = document.getElementById('c'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const r = [];
  for (let k = 0; k < 360; k++) {
    const a = k * Math.PI / 180; let far = 0;
    for (let t = 10; t < 48; t += 0.5) {
      const x = Math.round(c.width / 2 + t * Math.cos(a)), y = Math.round(c.height / 2 + t * Math.sin(a));
      if (x >= 0 && y >= 0 && x < c.width && y < c.height && d[(y * c.width + x) * 4 + 3] > 100) far = t;
    }
    r.push(far);
  }
  return {radius: r, buttons: Q('#form button', (el) => ({sides: el.getAttribute('data-sides')}))};"""))
def count_sides(s: dict, u: str) -> list[Action]:
    r = s["radius"]
    mean = sum(r) / len(r)

    def power(k: int) -> float:
        re_ = sum((v - mean) * math.cos(k * i * math.pi / 180) for i, v in enumerate(r))
        im = sum((v - mean) * math.sin(k * i * math.pi / 180) for i, v in enumerate(r))
        return re_ * re_ + im * im
    n = max(range(3, 8), key=power)  # a regular n-gon's outline repeats n times a turn
    return [click(_first(s["buttons"], lambda e: e["sides"] == str(n), f"the button {n}"))]


@expert("grid-coordinate", probe("return {points: Q('circle')};"))
def grid_coordinate(s: dict, u: str) -> list[Action]:
    xy = quoted(u, r"coordinate (\(-?\d,-?\d\))")
    return [click(_first(s["points"], lambda e: e["id"] == xy, xy))]


# --- text and numbers ------------------------------------------------------------------------------
@expert("enter-text-2")
def enter_text_2(s: dict, u: str) -> list[Action]:
    text = quoted(u, r'Type "(.*?)"')
    text = text.upper() if "upper case" in u else text.lower()
    f = find(s, lambda e: e["id"] == "tt", "#tt")
    return _field_then_submit(s, f, text, find(s, lambda e: e["id"] == "subbtn", "Submit"))


_MATH_JS = probe("""
  return {problem: (F('#math-problem') || {}).text || '', field: FIELD('#math-answer'), sub: F('#subbtn'),
          blocks: [document.querySelectorAll('#visual-1 .addition-block').length,
                   document.querySelectorAll('#visual-2 .addition-block').length]};""")


def _solve(problem: str) -> int:
    """``a op b =`` (op: + - x) or a linear equation in x with one digit and one result."""
    p = problem.replace(" ", "")
    m = re.fullmatch(r"(-?\d+)([-+x])(-?\d+)=", p)
    if m:
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        return a + b if op == "+" else a - b if op == "-" else a * b
    m = re.fullmatch(r"x([-+])(\d+)=(-?\d+)", p)
    if m:
        d, r = int(m.group(2)), int(m.group(3))
        return r - d if m.group(1) == "+" else r + d
    m = re.fullmatch(r"(\d+)([-+])x=(-?\d+)", p)
    if m:
        d, r = int(m.group(1)), int(m.group(3))
        return r - d if m.group(2) == "+" else d - r
    raise ExpertError(f"cannot solve {problem!r}")


@expert("simple-arithmetic", _MATH_JS)
def simple_math(s: dict, u: str) -> list[Action]:
    return _field_then_submit(s, s["field"], str(_solve(s["problem"])), s["sub"])


expert("simple-algebra", _MATH_JS)(simple_math)


@expert("visual-addition", _MATH_JS)
def visual_addition(s: dict, u: str) -> list[Action]:
    return _field_then_submit(s, s["field"], str(sum(s["blocks"])), s["sub"])


@expert("text-transform", probe("""
  return {captcha: Array.from(document.querySelectorAll('#captcha span')).map((e) => e.textContent).join(''),
          field: FIELD('#tt'), sub: F('#subbtn')};"""))
def text_transform(s: dict, u: str) -> list[Action]:
    return _field_then_submit(s, s["field"], s["captcha"], s["sub"])


_DATE_JS = probe("return {field: FIELD('#tt'), sub: F('#subbtn')};")


@expert("enter-date", _DATE_JS)
def enter_date(s: dict, u: str) -> list[Action]:
    m, d, y = quoted(u, r"Enter (\d\d/\d\d/\d{4})").split("/")
    f = s["field"]
    if f["value"] == f"{y}-{m}-{d}":
        return [click(s["sub"])]
    if not f["focused"]:
        return [point(f["x"] + 8, f["y"] + f["h"] / 2)]  # the month part of the field
    return [Type(m + d + y)]


@expert("enter-time", _DATE_JS)
def enter_time(s: dict, u: str) -> list[Action]:
    h, mi, ampm = re.search(r"Enter (\d+):(\d\d) ?([AP]M)", u).groups() if re.search(
        r"Enter (\d+):(\d\d) ?([AP]M)", u) else (None, None, None)
    if h is None:
        raise ExpertError(f"cannot parse the instruction {u!r}")
    h24 = int(h) % 12 + (12 if ampm == "PM" else 0)
    f = s["field"]
    if f["value"] == f"{h24:02d}:{mi}":
        return [click(s["sub"])]
    if not f["focused"]:
        return [point(f["x"] + 8, f["y"] + f["h"] / 2)]  # the hour part of the field
    return [Type(f"{int(h):02d}{mi}{ampm[0]}")]


@expert("use-autocomplete-nodelay", probe("""
  return {items: (typeof ITEMS !== 'undefined') ? ITEMS : [], field: FIELD('#tags'), sub: F('#subbtn'),
          menu: Q('ul.ui-autocomplete li')};"""))
def use_autocomplete(s: dict, u: str) -> list[Action]:
    start = quoted(u, r'starts with "(.*?)"')
    end = re.search(r'ends with "(.*?)"', u)
    tail = end.group(1) if end else ""
    want = next((c for c in s["items"] if c.startswith(start) and c.endswith(tail)), None)
    if want is None:
        raise ExpertError(f"no item starts with {start!r} and ends with {tail!r}")
    for e in s["menu"]:
        if e["visible"] and e["text"] == want and e["y"] + e["h"] <= 210:
            return [click(e)]
    if s["field"]["value"] == want and not any(e["visible"] for e in s["menu"]):
        return [click(s["sub"])]
    if s["field"]["value"] == want:
        return [Key("escape")]
    return [fill(s, s["field"], want) or Key("escape")]


_COLOR_JS = probe("""
  const cc = document.querySelector('#query .cc');
  const q = document.getElementById('query').textContent.match(/Select (.*) with the color picker/);
  let want = cc ? getComputedStyle(cc).backgroundColor : (q ? ui_utils.colorNameToHex(q[1]) : null);
  const sub = F('#subbtn'); const hit = sub && document.elementFromPoint(sub.x + sub.w / 2, sub.y + sub.h / 2);
  return {want: want, field: FIELD('#col'), sub: sub, covered: hit !== document.getElementById('subbtn'), blank: BLANK()};""")


def _hex(css: str) -> str:
    m = re.fullmatch(r"rgba?\((\d+),\s*(\d+),\s*(\d+).*\)", css.strip())
    if m:
        return "".join(f"{int(v):02x}" for v in m.groups())
    return css.strip().lstrip("#").lower()


@expert("use-colorwheel", _COLOR_JS)
def use_colorwheel(s: dict, u: str) -> list[Action]:
    if not s["want"]:
        raise ExpertError("the wanted colour is not on the page")
    want, f = _hex(s["want"]), s["field"]
    if f["value"].lower() != want:
        return [fill(s, f, want)]
    if s["covered"]:  # the picker is open over Submit: a click on the background closes it
        if not s["blank"]:
            raise ExpertError("no blank spot to close the colour picker")
        return [point(*s["blank"])]
    return [click(s["sub"])]


expert("use-colorwheel-2", _COLOR_JS)(use_colorwheel)


# --- sliders, resizing, geometry ---------------------------------------------------------------------
_SLIDER_JS = probe("""
  return {sliders: Array.from(document.querySelectorAll('#area .ui-slider')).map((el) => {
    const $s = $(el); const h = el.querySelector('.ui-slider-handle');
    return Object.assign(B(el), {min: $s.slider('option', 'min'), max: $s.slider('option', 'max'), value: $s.slider('value'),
      vertical: $s.slider('option', 'orientation') === 'vertical', focused: document.activeElement === h});
  }), sub: F('#subbtn')};""")


def _set_slider(sl: dict, want: int) -> Action | None:
    diff = want - sl["value"]
    if diff == 0:
        return None
    if sl["focused"] and abs(diff) <= 12:
        return Key("right" if diff > 0 else "left")
    f = (want - sl["min"]) / max(1, sl["max"] - sl["min"])
    if sl["vertical"]:  # a click on the track moves the handle there (the ends: just inside the track)
        return point(sl["x"] + sl["w"] / 2, min(sl["y"] + sl["h"] - 1, max(sl["y"] + 1, sl["y"] + sl["h"] * (1 - f))))
    return point(min(sl["x"] + sl["w"] - 1, max(sl["x"] + 1, sl["x"] + sl["w"] * f)), sl["y"] + sl["h"] / 2)


@expert("use-slider", _SLIDER_JS)
def use_slider(s: dict, u: str) -> list[Action]:
    a = _set_slider(s["sliders"][0], int(quoted(u, r"Select (-?\d+) with the slider")))
    return [a] if a else [click(s["sub"])]


@expert("use-slider-2", _SLIDER_JS)
def use_slider_2(s: dict, u: str) -> list[Action]:
    combo = [int(v) for v in re.findall(r"-?\d+", quoted(u, r"combination (\[.*?\])"))]
    for sl, want in zip(s["sliders"], combo, strict=False):
        a = _set_slider(sl, want)
        if a:
            return [a]
    return [click(s["sub"])]


@expert("resize-textarea", probe("""
  const tt = document.getElementById('tt'); if (!tt) return {};
  const r = tt.getBoundingClientRect();
  if (tt.dataset.dwW === undefined) { tt.dataset.dwW = r.width; tt.dataset.dwH = r.height; }
  return {w: r.width, h: r.height, w0: +tt.dataset.dwW, h0: +tt.dataset.dwH, sub: F('#submit'),
          east: HIT('#area .ui-resizable-e'), south: HIT('#area .ui-resizable-s')};"""))
def resize_textarea(s: dict, u: str) -> list[Action]:
    """The probe notes the textarea's first size on the element (the task keeps its own in a closure)."""
    dim, way = re.search(r"the (width|height) is (smaller|larger)", u).groups()
    grow = 1 if way == "larger" else -1
    now, start = (s["w"], s["w0"]) if dim == "width" else (s["h"], s["h0"])
    if (now - start) * grow >= 3:
        return [click(s["sub"])]
    handle = s["east"] if dim == "width" else s["south"]
    if handle is None:
        raise ExpertError(f"the {dim} handle is covered")
    x, y = centre(handle)
    dx, dy = (15 * grow, 0) if dim == "width" else (0, 15 * grow)
    return drag_path(x, y, x + dx, y + dy, moves=5)


_GEOM_JS = probe("""
  const svg = document.getElementById('svg-grid');
  return {svg: svg ? B(svg) : null, sub: F('#subbtn'), points: Q('#svg-grid circle', (el) => ({
    cls: el.getAttribute('class') || '', cx: +el.getAttribute('cx'), cy: +el.getAttribute('cy')}))};""")
QUERY_PADDING = 50  # these tasks draw a click at page (x, y) at svg (x, y - 50)


def _place(s: dict, tx: float, ty: float) -> list[Action]:
    blue = [p for p in s["points"] if p["id"] == "blue-circle"]
    if blue and abs(blue[0]["cx"] - tx) <= 1.5 and abs(blue[0]["cy"] - ty) <= 1.5:
        return [click(s["sub"])]
    return [point(tx, ty + QUERY_PADDING)]


def _inside(s: dict, x: float, y: float, margin: float = 4) -> bool:
    svg = s["svg"]
    px, py = x, y + QUERY_PADDING
    return svg["x"] + margin <= px <= svg["x"] + svg["w"] - margin and svg["y"] + margin <= py <= min(
        svg["y"] + svg["h"], 210) - margin


def _along(s: dict, vx: float, vy: float, ux: float, uy: float) -> tuple[float, float]:
    n = math.hypot(ux, uy) or 1.0
    for d in (30, 24, 18, 12, 8, 5):
        x, y = vx + ux / n * d, vy + uy / n * d
        if _inside(s, x, y):
            return round(x), round(y)
    raise ExpertError("no room on the grid in that direction")


def _pt(s: dict, pred: Callable[[dict], bool]) -> list[dict]:
    return [p for p in s["points"] if pred(p)]


@expert("circle-center", _GEOM_JS)
def circle_center(s: dict, u: str) -> list[Action]:
    (c,) = _pt(s, lambda p: "black-circle" in p["cls"])[:1]
    return _place(s, c["cx"], c["cy"])


@expert("find-midpoint", _GEOM_JS)
def find_midpoint(s: dict, u: str) -> list[Action]:
    a, b = _pt(s, lambda p: "black-circle" in p["cls"])[:2]
    return _place(s, round((a["cx"] + b["cx"]) / 2), round((a["cy"] + b["cy"]) / 2))


@expert("bisect-angle", _GEOM_JS)
def bisect_angle(s: dict, u: str) -> list[Action]:
    v = _pt(s, lambda p: "init-blue" in p["cls"])[0]
    a, b = _pt(s, lambda p: "init-black" in p["cls"])[:2]
    ua = (a["cx"] - v["cx"], a["cy"] - v["cy"])
    ub = (b["cx"] - v["cx"], b["cy"] - v["cy"])
    na, nb = math.hypot(*ua), math.hypot(*ub)
    ux, uy = ua[0] / na + ub[0] / nb, ua[1] / na + ub[1] / nb
    return _place(s, *_along(s, v["cx"], v["cy"], ux, uy))


@expert("right-angle", _GEOM_JS)
def right_angle(s: dict, u: str) -> list[Action]:
    v = _pt(s, lambda p: p["id"] == "init-blue")[0]
    a = _pt(s, lambda p: p["id"] == "init-black")[0]
    ux, uy = -(a["cy"] - v["cy"]), a["cx"] - v["cx"]
    try:
        return _place(s, *_along(s, v["cx"], v["cy"], ux, uy))
    except ExpertError:
        return _place(s, *_along(s, v["cx"], v["cy"], -ux, -uy))


# --- dragging --------------------------------------------------------------------------------------
@expert("drag-box", probe("return {small: F('#draggableSmall'), large: F('#draggableLarge'), sub: F('#subbtn')};"))
def drag_box(s: dict, u: str) -> list[Action]:
    sm, lg = s["small"], s["large"]
    dx, dy = sm["x"] - lg["x"], sm["y"] - lg["y"]
    side = lg["w"] - sm["w"]
    if 0 < round(dx) < side and 0 < round(dy) < side:
        return [click(s["sub"])]
    tx, ty = lg["x"] + side / 2 - sm["x"], lg["y"] + side / 2 - sm["y"]  # move the small box by this much
    for fx in (0.5, 0.2, 0.8):  # grab the small box where the large one (drawn above it) does not cover it
        for fy in (0.5, 0.2, 0.8):
            x, y = sm["x"] + sm["w"] * fx, sm["y"] + sm["h"] * fy
            if not (lg["x"] <= x <= lg["x"] + lg["w"] and lg["y"] <= y <= lg["y"] + lg["h"]):
                return drag_path(x, y, x + tx, y + ty, moves=6)
    x, y = centre(lg)  # the small box is under the large one: move the large one instead
    return drag_path(x, y, x - tx, y - ty, moves=6)


_SORT_JS = probe("return {items: Q('#sortable li'), sub: F('#subbtn')};")


def _drop(items: list[dict], src: int, dst: int) -> list[Action]:
    """Drag item ``src`` so that it lands at index ``dst`` (0-based) of a vertical sortable list."""
    a, b = items[src], items[dst]
    x0, y0 = centre(a)
    x1, y1 = centre(b)
    y1 += 4 if dst > src else -4
    return drag_path(x0, y0, x1, y1, moves=4 * abs(dst - src) + 4)


_ORDINAL = re.compile(r"to the (\d)(?:st|nd|rd|th) position")


@expert("drag-items", _SORT_JS)
def drag_items(s: dict, u: str) -> list[Action]:
    name, how = re.search(r"Drag (.*?) (to the .*|up by one.*|down by one.*)\.$", u).groups()
    names = [e["text"] for e in s["items"]]
    src = names.index(name)
    n = len(names)
    if how.startswith("to the top"):
        dst = 0
    elif how.startswith("to the bottom"):
        dst = n - 1
    elif how.startswith("up"):
        dst = src - 1
    elif how.startswith("down"):
        dst = src + 1
    else:
        dst = int(_ORDINAL.search(how).group(1)) - 1
    return _drop(s["items"], src, dst)


_GRID = {"top left": 0, "top center": 1, "top right": 2, "center left": 3, "center": 4, "center right": 5,
         "bottom left": 6, "bottom center": 7, "bottom right": 8}


@expert("drag-items-grid", probe("""
  if (!window.__dwPointer) {  // where the pointer is: a drag is released where it was last moved to
    window.__dwPointer = [0, 0];
    document.addEventListener('mousemove', (e) => { window.__dwPointer = [e.clientX, e.clientY]; }, true);
  }
  const kids = Array.from(document.querySelectorAll('#sortable > li')).filter((e) => !e.classList.contains('ui-sortable-helper'));
  return {slots: kids.map((e) => Object.assign(B(e), {text: e.textContent.trim()})),
          placeholder: kids.findIndex((e) => e.classList.contains('ui-sortable-placeholder')),
          dragging: !!document.querySelector('#sortable > .ui-sortable-helper'),
          oldix: (typeof OLDIX !== 'undefined') ? OLDIX : null, pointer: window.__dwPointer};"""))
def drag_items_grid(s: dict, u: str) -> list[Action]:
    """Closed loop: press on the item, move onto the wanted slot while watching where the grid's
    placeholder is (the grid reflows as the drag passes items), and release once it is there."""
    name, how = re.search(r"Drag (.*?) (to the .*|up by one|down by one|left by one|right by one)\.$", u).groups()
    slots = s["slots"]
    if s["dragging"] and s["oldix"]:
        src = int(s["oldix"]) - 1
    else:
        src = [e["text"] for e in slots].index(name)
    if how.startswith("to the "):
        dst = _GRID[how[len("to the "):]]
    else:
        dst = src + {"up": -3, "down": 3, "left": -1, "right": 1}[how.split()[0]]
    if not s["dragging"]:
        x, y = centre(slots[src])
        return drag_path(x, y, x + 2, y + 2, moves=1)[:-1]  # press and start the drag, keep the button down
    ph = s["placeholder"]
    if ph == dst:
        return [MouseUp(*_norm(*s["pointer"]))]
    # The grid's sortable is not 'floating': the placeholder goes after the item under the pointer when the
    # pointer moves down, before it when it moves up (sideways moves do nothing). So come onto the slot
    # from above to land after it (moving forward), from below to land before it.
    tx, ty = centre(slots[dst])
    dy = 6 if dst > ph else -6
    return [Move(*_norm(tx, ty - dy)), Move(*_norm(tx, ty + dy))]


@expert("drag-sort-numbers", _SORT_JS)
def drag_sort_numbers(s: dict, u: str) -> list[Action]:
    vals = [int(e["text"]) for e in s["items"]]
    want = sorted(vals)
    for i, (v, w) in enumerate(zip(vals, want, strict=True)):
        if v != w:
            return _drop(s["items"], vals.index(w, i), i)
    return [click(s["sub"])]


@expert("drag-shapes", probe(_SHAPES_JS.replace("return Object.assign(B(el), {", """
    const g = shapes.gridCoords(el);
    const inside = g.x > containerX && g.x < containerX + containerWidth && g.y > containerY && g.y < containerY + containerHeight;
    return Object.assign(B(el), {inside: inside, """).replace("const shapes =", "const shapes_ =") + """
  return {shapes: shapes_, box: F('#shape-container'), sub: F('#subbtn')};"""))
def drag_shapes(s: dict, u: str) -> list[Action]:
    kind = {"rectangles": "rect", "circles": "circle", "triangles": "polygon"}[
        quoted(u, r"Drag all (\w+) into the black box")]
    box = s["box"]
    for i, e in enumerate(s["shapes"]):
        want = e["tag"] == kind
        if e["inside"] != want:
            x, y = centre(e)
            if want:
                tx, ty = box["x"] + box["w"] / 2 + (i % 3 - 1) * 10, box["y"] + box["h"] / 2
            else:
                tx, ty = (10, 200) if box["y"] > 60 else (10, 195)
            return drag_path(x, y, tx, ty, moves=6)
    return [click(s["sub"])]


# --- a game --------------------------------------------------------------------------------------
_LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
RANDOM_CHANCE = 0.55  # tic-tac-toe's computer moves at random this often, else wins or blocks when it can


def _winner(b: tuple[int, ...]) -> int:
    for i, j, k in _LINES:
        if b[i] and b[i] == b[j] == b[k]:
            return b[i]
    return 0


def _completing(b: tuple[int, ...], who: int) -> list[int]:
    out = []
    for line in _LINES:
        vals = [b[i] for i in line]
        if vals.count(who) == 2 and vals.count(0) == 1:
            out.append(line[vals.index(0)])
    return out


@functools.cache
def _p_win(b: tuple[int, ...]) -> float:
    """Chance that X (to move) wins from ``b`` playing best against the task's computer."""
    free = [i for i, v in enumerate(b) if v == 0]
    return max((_after_x(b, i) for i in free), default=0.0)


def _after_x(b: tuple[int, ...], i: int) -> float:
    nb = b[:i] + (1,) + b[i + 1:]
    if _winner(nb) == 1:
        return 1.0
    free = [j for j, v in enumerate(nb) if v == 0]
    if not free:
        return 0.0
    smart = _completing(nb, -1) or _completing(nb, 1)
    moves = [(RANDOM_CHANCE / len(free), j) for j in free]
    if smart:
        moves += [((1 - RANDOM_CHANCE) / len(smart), j) for j in smart]
    else:
        moves += [((1 - RANDOM_CHANCE) / len(free), j) for j in free]
    total = 0.0
    for p, j in moves:
        ob = nb[:j] + (-1,) + nb[j + 1:]
        total += 0.0 if _winner(ob) == -1 else p * _p_win(ob)
    return total


@expert("tic-tac-toe", probe("return {cells: Q('.ttt-row span', (el) => ({cls: el.getAttribute('class') || ''}))};"))
def tic_tac_toe(s: dict, u: str) -> list[Action]:
    cells = s["cells"]
    b = tuple(1 if "mark-x" in c["cls"] else -1 if "mark-o" in c["cls"] else 0 for c in cells)
    free = [i for i, v in enumerate(b) if v == 0]
    if not free:
        raise ExpertError("the board is full")
    best = max(free, key=lambda i: (_after_x(b, i), -abs(i - 4)))
    return [click(cells[best])]
