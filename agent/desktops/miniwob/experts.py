"""Scripted MiniWoB++ experts: they read the page's DOM (for making demos only) and emit our
normalised Actions, computed from element bounding boxes in the task area.

Each expert is a pure function of the current page state (one DOM snapshot) and the utterance,
returning the *next* action only — so it can be consulted at any step, after any mistake, in
headless and desktop mode alike. Policies that learn from the demos never see the DOM.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from agent.desktops.miniwob.browser import TASK_H, TASK_W
from policies.actions import Action, Click, Key, Type, Wait
from policies.pixel.words import is_word_char, word_position

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
        raise ExpertError(f"element <{e['tag']} id={e['id']!r} text={e['text'][:20]!r}> is outside the task area")
    return Click(*_norm((x0 + x1) / 2, (y0 + y1) / 2))


def _find(s: dict, pred: Callable[[dict], bool], what: str) -> dict:
    for e in s["els"]:
        if e["visible"] and pred(e):
            return e
    raise ExpertError(f"not on the page: {what}")


def _quoted(utterance: str, pattern: str) -> str:
    m = re.search(pattern, utterance)
    if not m:
        raise ExpertError(f"cannot parse the instruction {utterance!r}")
    return m.group(1)


def _fill(s: dict, field: dict, text: str) -> Action | None:
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


def _by_id(s: dict, id_: str) -> dict:
    return _find(s, lambda e: e["id"] == id_, f"#{id_}")


def _submit(s: dict) -> Click:
    return click(_by_id(s, "subbtn"))


# --- the experts -------------------------------------------------------------------------------
def click_button(s: dict, u: str) -> list[Action]:
    label = _quoted(u, r'Click on the "(.*)" button')
    return [click(_find(s, lambda e: e["tag"] == "button" and e["text"] == label, f"button {label!r}"))]


def click_button_sequence(s: dict, u: str) -> list[Action]:
    pushed = s.get("pushed") or []
    return [click(_by_id(s, "subbtn2" if "subbtn" in pushed else "subbtn"))]


def _tick(s: dict, u: str, kind: str, names: list[str]) -> list[Action]:
    for e in s["els"]:
        if e["tag"] == "input" and e["type"] == kind and e["visible"]:
            want = e["label"] in names
            if e["checked"] != want and (want or kind == "checkbox"):
                return [click(e)]
    return [_submit(s)]


def click_checkboxes(s: dict, u: str) -> list[Action]:
    what = _quoted(u, r"Select (.*) and click Submit")
    names = [] if what == "nothing" else [w.strip() for w in what.split(",")]
    return _tick(s, u, "checkbox", names)


def click_option(s: dict, u: str) -> list[Action]:
    return _tick(s, u, "radio", [_quoted(u, r"Select (.*) and click Submit")])


def click_collapsible(s: dict, u: str) -> list[Action]:
    if s["animating"]:
        return [Wait(0.1)]
    if not s["accordion_open"]:
        return [click(_find(s, lambda e: e["tag"] == "h3", "the section header"))]
    return [_submit(s)]


def click_dialog(s: dict, u: str) -> list[Action]:
    if s["animating"]:
        return [Wait(0.1)]
    return [click(_find(s, lambda e: "ui-dialog-titlebar-close" in e["cls"], "the dialog's x"))]


def click_dialog_2(s: dict, u: str) -> list[Action]:
    if s["animating"]:
        return [Wait(0.1)]
    label = _quoted(u, r'labeled "(.*)"')
    if label == "x":
        return click_dialog(s, u)
    return [click(_find(s, lambda e: e["tag"] == "button" and e["text"] == label
                        and "ui-dialog-titlebar-close" not in e["cls"], f"dialog button {label!r}"))]


def click_link(s: dict, u: str) -> list[Action]:
    word = _quoted(u, r'Click on the link "(.*)"')
    return [click(_find(s, lambda e: "alink" in e["cls"] and e["text"] == word, f"link {word!r}"))]


def click_tab(s: dict, u: str) -> list[Action]:
    n = _quoted(u, r"Tab #(\d+)")
    return [click(_find(s, lambda e: e["tag"] == "a" and e["text"] == f"Tab #{n}", f"Tab #{n}"))]


def click_test(s: dict, u: str) -> list[Action]:
    return [_submit(s)]


def click_test_2(s: dict, u: str) -> list[Action]:
    which = _quoted(u, r"Click button (\w+)")
    return [click(_find(s, lambda e: e["tag"] == "button" and e["text"] == which, f"button {which}"))]


def click_widget(s: dict, u: str) -> list[Action]:
    kind = _quoted(u, r'Click on a "(.*)" widget')
    return [click(_find(s, lambda e: e["dtype"] == kind, f"a {kind} widget"))]


def _fill_all(s: dict, fields: list[tuple[str, str]]) -> list[Action]:
    for id_, text in fields:
        a = _fill(s, _by_id(s, id_), text)
        if a is not None:
            return [a]
    return [_submit(s)]


def enter_password(s: dict, u: str) -> list[Action]:
    pw = _quoted(u, r'password "(.*?)"')
    return _fill_all(s, [("password", pw), ("verify", pw)])


def enter_text(s: dict, u: str) -> list[Action]:
    return _fill_all(s, [("tt", _quoted(u, r'Enter "(.*?)"'))])


def focus_text(s: dict, u: str) -> list[Action]:
    return [click(_by_id(s, "tt"))]


def focus_text_2(s: dict, u: str) -> list[Action]:
    pos = _quoted(u, r"the (1st|2nd|3rd) input")
    return [click(_by_id(s, "tt" + pos[0]))]


def login_user(s: dict, u: str) -> list[Action]:
    user = _quoted(u, r'username "(.*?)"')
    pw = _quoted(u, r'password "(.*?)"')
    return _fill_all(s, [("username", user), ("password", pw)])


EXPERTS: dict[str, Callable[[dict, str], list[Action]]] = {
    "click-button": click_button,
    "click-button-sequence": click_button_sequence,
    "click-checkboxes": click_checkboxes,
    "click-collapsible": click_collapsible,
    "click-dialog": click_dialog,
    "click-dialog-2": click_dialog_2,
    "click-link": click_link,
    "click-option": click_option,
    "click-tab": click_tab,
    "click-test": click_test,
    "click-test-2": click_test_2,
    "click-widget": click_widget,
    "enter-password": enter_password,
    "enter-text": enter_text,
    "focus-text": focus_text,
    "focus-text-2": focus_text_2,
    "login-user": login_user,
}
EXPERT_TASKS = tuple(EXPERTS)


def named_word(utterance: str, text: str) -> str | None:
    """``text`` (an element's own text or label) cut to its word characters, if the utterance holds
    it as a whole word (as training finds it: :func:`policies.pixel.model.word_position`): the
    instruction word that names that element; else None."""
    i, j = 0, len(text)
    while i < j and not is_word_char(text[i]):
        i += 1
    while j > i and not is_word_char(text[j - 1]):
        j -= 1
    word = text[i:j]
    if not word or any(not is_word_char(c) for c in word):
        return None
    return word if word_position(utterance.encode("utf-8"), word) >= 0 else None


def expert_target(task: str, driver, utterance: str) -> str | None:
    """The instruction word naming what the expert's next click lands on (the smallest visible
    element under it whose text, or label, the utterance holds as a word), or None: what a demo
    records so a reading policy learns which word to look for (``agent.sessions.dagger.ExpertTargets``)."""
    if task not in EXPERTS:
        return None
    s = snapshot(driver)
    acts = [] if s["done"] else EXPERTS[task](s, utterance)
    if not acts or not isinstance(acts[0], Click):
        return None
    x, y = acts[0].x * TASK_W, acts[0].y * TASK_H
    under = sorted((e for e in s["els"] if e["visible"] and e["x"] <= x <= e["x"] + e["w"]
                    and e["y"] <= y <= e["y"] + e["h"]), key=lambda e: e["w"] * e["h"])
    for e in under:
        for text in (e["text"], e["label"]):
            word = named_word(utterance, text) if text else None
            if word:
                return word
    return None


def expert_actions(task: str, driver, utterance: str) -> list[Action]:
    """The expert's next action for ``task`` from the live page ([] once the episode is over)."""
    if task not in EXPERTS:
        raise ExpertError(f"no scripted expert for MiniWoB++ task {task!r}; experts exist for {', '.join(EXPERTS)}")
    s = snapshot(driver)
    if s["done"]:
        return []
    return EXPERTS[task](s, utterance)
