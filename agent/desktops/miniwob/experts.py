"""Scripted MiniWoB++ experts: they read the page's DOM (for making demos only) and emit our
normalised Actions, computed from element bounding boxes in the task area.

Each expert is a pure function of the current page state (one DOM snapshot) and the utterance,
returning the *next* action only — so it can be consulted at any step, after any mistake, in
headless and desktop mode alike. Policies that learn from the demos never see the DOM.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.desktops.miniwob import experts_pix2act
from agent.desktops.miniwob.browser import TASK_H, TASK_W
from agent.desktops.miniwob.dom import SNAPSHOT_JS, ExpertError, click, snapshot
from agent.desktops.miniwob.dom import by_id as _by_id
from agent.desktops.miniwob.dom import fill as _fill
from agent.desktops.miniwob.dom import find as _find
from agent.desktops.miniwob.dom import quoted as _quoted
from agent.desktops.miniwob.dom import submit as _submit
from policies.actions import Action, Click, Done, Wait
from policies.pixel.words import is_word_char, word_position


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
    # Pix2Act's set: variants that the experts above already solve ...
    "click-checkboxes-large": click_checkboxes,
    "click-checkboxes-transfer": click_checkboxes,
    "click-collapsible-nodelay": click_collapsible,
    "click-test-transfer": click_test_2,
    "unicode-test": click_button,
    # ... and the tasks with their own experts and probes (agent.desktops.miniwob.experts_pix2act)
    **experts_pix2act.EXPERTS,
}
# The JavaScript each task's expert reads the page with (default: SNAPSHOT_JS).
PROBES: dict[str, str] = dict(experts_pix2act.PROBES)
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
    if task not in EXPERTS or task in PROBES:  # only the common snapshot lists the elements under a click
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
    """The expert's next actions for ``task`` from the live page (``done`` once the episode is over)."""
    if task not in EXPERTS:
        raise ExpertError(f"no scripted expert for MiniWoB++ task {task!r}; experts exist for {', '.join(EXPERTS)}")
    s = driver.execute_script(PROBES.get(task, SNAPSHOT_JS))
    if s["done"]:
        return [Done()]
    return EXPERTS[task](s, utterance)
