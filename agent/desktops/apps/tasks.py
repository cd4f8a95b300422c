"""The apps suite's tasks: seeded episodes, success read from the app, and scripted experts.

A task names a toolkit (``tk`` or ``gtk``) and an app: our small task apps (:mod:`~agent.desktops.apps.tk_app`,
:mod:`~agent.desktops.apps.gtk_app`, built from a spec with the toolkit's own widgets) or
``gtk3-widget-factory`` (GTK's own demo of every widget, read over AT-SPI). ``episode(seed)`` gives
the instruction, the app's spec and the goal. Everything after that reads the app's *state* — the
task apps' own report, or the accessibility tree turned into the same shape:

``{"targets": {id: [x, y, w, h]}, "values": {...}, "events": [...]}`` (root-window pixels).

``outcome(state, goal)`` is ``None`` while undecided, ``True`` on success, ``False`` on a decisive
wrong step (a wrong button, item or answer; a form submitted wrong). ``expert(state, goal, point)``
is the scripted expert's next action(s): it finds its targets in the state, as the MiniWoB++
experts read the DOM — for demos only; a learned policy sees pixels.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from policies.actions import Action, Click, Drag, Type

Point = Callable[..., tuple[float, float]]  # point(box, fx=0.5, fy=0.5) -> normalised (x, y)

BUTTONS = ("Save", "Open", "Print", "Delete", "Cancel", "Apply", "Export", "Help", "Close", "Share", "Reload",
           "Undo", "Search", "Upload")
FIELDS = ("Name", "Email", "City", "Phone", "Company", "Country")
FIRST = ("Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger")
CITIES = ("Oslo", "Lima", "Cairo", "Quito", "Perth", "Dakar", "Turin", "Osaka", "Leeds", "Tunis")
COMPANIES = ("Acme", "Initech", "Globex", "Umbrella", "Hooli", "Vandelay", "Wonka", "Stark")
COUNTRIES = ("Norway", "Peru", "Egypt", "Chile", "Japan", "Kenya", "Italy", "Canada")
CHECKS = ("Bold", "Italic", "Underline", "Wrap lines", "Autosave", "Spell check", "Dark mode", "Line numbers")
RADIOS = (("Small", "Medium", "Large", "Huge"), ("Red", "Green", "Blue", "Yellow"),
          ("Daily", "Weekly", "Monthly", "Never"), ("Car", "Train", "Plane", "Boat"))
SETTINGS = (("Paper size", ("A4", "Letter", "Legal", "A5")), ("Theme", ("Light", "Dark", "System")),
            ("Units", ("Metric", "Imperial")), ("Updates", ("Automatic", "Notify", "Off")),
            ("Language", ("English", "French", "German", "Spanish")))
ITEMS = ("Apple", "Banana", "Cherry", "Grape", "Lemon", "Mango", "Orange", "Peach", "Pear", "Plum", "Kiwi",
         "Melon")
MENUS = {"File": ("New", "Open", "Save", "Export", "Print"),
         "Edit": ("Undo", "Cut", "Copy", "Paste", "Preferences"),
         "View": ("Zoom in", "Zoom out", "Full screen", "Sidebar")}

# The toolkits' own looks, one per episode from the seed: GTK's built-in themes (GTK_THEME), and Tk
# palettes (tk_setPalette; "default" is Tk's own grey).
LOOKS = {"gtk": ("Adwaita", "Adwaita:dark", "HighContrast"), "tk": ("default", "dark", "wheat", "slate")}


def _pick(rng: random.Random, options: tuple[str, ...], **kw: str) -> str:
    return rng.choice(options).format(**kw)


def _field_value(rng: random.Random, field: str) -> str:
    first = rng.choice(FIRST)
    return {"Name": f"{first} {rng.choice(('Smith', 'Jones', 'Brown', 'Lee', 'Khan', 'Novak'))}",
            "Email": f"{first.lower()}{rng.randint(1, 99)}@example.com",
            "City": rng.choice(CITIES), "Phone": f"555{rng.randint(1000, 9999)}",
            "Company": rng.choice(COMPANIES), "Country": rng.choice(COUNTRIES)}[field]


@dataclass(frozen=True)
class Episode:
    instruction: str
    spec: dict  # for the task app (None-app tasks: what the app needs, e.g. nothing)
    goal: object


class AppTask:
    """One task: its toolkit, its app, seeded episodes, the success check and the expert."""

    kind = ""
    heading = ""

    def __init__(self, toolkit: str, app: str | None = None):
        self.toolkit = toolkit
        self.app = app or f"{toolkit}-task"  # "tk-task", "gtk-task" or a real program's name
        self.name = f"{toolkit}-{self.kind}"

    def episode(self, seed: int) -> Episode:
        rng = random.Random(f"{self.name}/{seed}")
        instruction, params, goal = self.generate(rng)
        look = random.Random(f"look/{self.name}/{seed}").choice(LOOKS[self.toolkit])
        spec = {"kind": self.kind, "title": f"dw {self.name}", "heading": self.heading, "params": params,
                "look": look}
        return Episode(instruction, spec, goal)

    def generate(self, rng: random.Random) -> tuple[str, dict, object]:  # pragma: no cover - overridden
        raise NotImplementedError

    def outcome(self, state: dict, goal) -> bool | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def expert(self, state: dict, goal, point: Point) -> list[Action]:  # pragma: no cover - overridden
        raise NotImplementedError

    def target_word(self, state: dict, goal) -> str | None:
        """The word on screen naming what the expert points at next (None: none does)."""
        return None

    @staticmethod
    def first_event(state: dict, key: str):
        for ev in state.get("events", ()):
            if key in ev:
                return ev[key]
        return None


class ButtonTask(AppTask):
    kind, heading = "button", "Toolbar"

    def generate(self, rng):
        labels = rng.sample(BUTTONS, rng.randint(4, 6))
        goal = rng.choice(labels)
        text = _pick(rng, ("Click the {g} button", "Press '{g}'", "Click \"{g}\"", "Press the button labelled {g}"),
                     g=goal)
        return text, {"labels": labels}, goal

    def outcome(self, state, goal):
        ev = self.first_event(state, "clicked")
        return None if ev is None else ev == goal

    def expert(self, state, goal, point):
        box = state["targets"].get(f"button:{goal}")
        return [Click(*point(box))] if box else []

    def target_word(self, state, goal):
        return goal


class FormTask(AppTask):
    kind, heading = "form", "Contact details"

    def generate(self, rng):
        fields = rng.sample(FIELDS, rng.randint(2, 3))
        goal = {f: _field_value(rng, f) for f in fields}
        parts = [f"{f} {v!r}" if rng.random() < 0.5 else f"{f}: {v}" for f, v in goal.items()]
        text = _pick(rng, ("Fill in the form ({p}) and press Submit", "Enter {p}, then Submit",
                           "Type {p} into the form and submit it"), p=", ".join(parts))
        return text, {"fields": fields}, goal

    def outcome(self, state, goal):
        sub = self.first_event(state, "submitted")
        return None if sub is None else all(sub.get(f"field:{f}") == v for f, v in goal.items())

    def _next(self, state, goal):
        vals = state.get("values", {})
        for f, v in goal.items():
            if vals.get(f"field:{f}") != v:
                return f, v, vals.get(f"field:{f}")
        return None

    def expert(self, state, goal, point):
        t = state["targets"]
        nxt = self._next(state, goal)
        if nxt is None:
            box = t.get("button:Submit")
            return [Click(*point(box))] if box else []
        f, v, have = nxt
        box = t.get(f"field:{f}")
        if not box:
            return []
        return [Click(*point(box), count=3 if have else 1), Type(v)]

    def target_word(self, state, goal):
        nxt = self._next(state, goal)
        return "Submit" if nxt is None else nxt[0]


class CheckTask(AppTask):
    kind, heading = "check", "Editor options"

    def generate(self, rng):
        labels = rng.sample(CHECKS, rng.randint(4, 5))
        goal = sorted(rng.sample(labels, rng.randint(1, 2)), key=labels.index)
        names = " and ".join(goal)
        text = _pick(rng, ("Tick {n}, then press Submit", "Check the boxes {n} and submit",
                           "Turn on {n} and click Submit"), n=names)
        return text, {"labels": labels}, goal

    def _wrong(self, state, goal):
        for k, v in state.get("values", {}).items():
            if k.startswith("check:") and bool(v) != (k[6:] in goal):
                return k[6:]
        return None

    def outcome(self, state, goal):
        sub = self.first_event(state, "submitted")
        if sub is None:
            return None
        return all(bool(v) == (k[6:] in goal) for k, v in sub.items() if k.startswith("check:"))

    def expert(self, state, goal, point):
        wrong = self._wrong(state, goal)
        box = state["targets"].get("button:Submit" if wrong is None else f"check:{wrong}")
        return [Click(*point(box, 0.5 if wrong is None else 0.15))] if box else []

    def target_word(self, state, goal):
        return self._wrong(state, goal) or "Submit"


class RadioTask(AppTask):
    kind, heading = "radio", "Choose one"

    def generate(self, rng):
        labels = list(rng.choice(RADIOS))
        rng.shuffle(labels)
        goal = rng.choice(labels)
        text = _pick(rng, ("Choose {g}", "Select the option '{g}'", "Pick \"{g}\""), g=goal)
        return text, {"labels": labels}, goal

    def outcome(self, state, goal):
        ev = self.first_event(state, "selected")
        return None if ev is None else ev == goal

    def expert(self, state, goal, point):
        box = state["targets"].get(f"radio:{goal}")
        return [Click(*point(box, 0.15))] if box else []

    def target_word(self, state, goal):
        return goal


class SettingsTask(AppTask):
    """A preferences window: one option group with a value already set, then OK (or Cancel).
    Kept out of every bundled checkpoint's training (:data:`HELD_OUT`): the task a user teaches."""

    kind, heading = "settings", "Preferences"

    def generate(self, rng):
        group, labels = rng.choice(SETTINGS)
        labels = list(labels)
        rng.shuffle(labels)
        goal, current = rng.sample(labels, 2)
        text = _pick(rng, ("Set {o} to {g}, then press OK", "Choose '{g}' and click OK",
                           "Select the option \"{g}\" and confirm with OK", "Pick {g} for {o} and press OK"),
                     g=goal, o=group)
        return text, {"group": group, "labels": labels, "current": current}, goal

    def outcome(self, state, goal):
        if self.first_event(state, "clicked") == "Cancel":
            return False
        sub = self.first_event(state, "submitted")
        return None if sub is None else sub.get("radio") == goal

    def expert(self, state, goal, point):
        t = state["targets"]
        if state.get("values", {}).get("radio") != goal:
            box = t.get(f"radio:{goal}")
            return [Click(*point(box, 0.15))] if box else []
        box = t.get("button:OK")
        return [Click(*point(box))] if box else []

    def target_word(self, state, goal):
        return goal if state.get("values", {}).get("radio") != goal else "OK"


class ListTask(AppTask):
    kind, heading = "list", "Fruit"

    def generate(self, rng):
        items = rng.sample(ITEMS, 8)
        goal = rng.choice(items)
        text = _pick(rng, ("Select {g} in the list", "Choose '{g}' from the list", "Click the list item \"{g}\""),
                     g=goal)
        return text, {"items": items}, goal

    def outcome(self, state, goal):
        ev = self.first_event(state, "selected")
        return None if ev is None else ev == goal

    def expert(self, state, goal, point):
        box = state["targets"].get(f"item:{goal}")
        return [Click(*point(box, 0.3))] if box else []

    def target_word(self, state, goal):
        return goal


class SpinTask(AppTask):
    kind, heading = "spin", "Print"

    def generate(self, rng):
        start = rng.randint(1, 20)
        goal = rng.choice([v for v in range(1, 21) if v != start])
        text = _pick(rng, ("Set Copies to {g} and press OK", "Change the number of copies to {g}, then OK",
                           "Make it {g} copies and click OK"), g=goal)
        return text, {"label": "Copies", "lo": 1, "hi": 20, "start": start}, goal

    def outcome(self, state, goal):
        sub = self.first_event(state, "submitted")
        return None if sub is None else str(sub.get("spin", "")).strip() == str(goal)

    def expert(self, state, goal, point):
        t = state["targets"]
        if str(state.get("values", {}).get("spin", "")).strip() != str(goal):
            box = t.get("spin")
            return [Click(*point(box, 0.25), count=3), Type(str(goal))] if box else []
        box = t.get("button:OK")
        return [Click(*point(box))] if box else []

    def target_word(self, state, goal):
        return "OK" if str(state.get("values", {}).get("spin", "")).strip() == str(goal) else "Copies"


class ScaleTask(AppTask):
    kind, heading = "scale", "Sound"

    def generate(self, rng):
        start = rng.randint(0, 10)
        goal = rng.choice([v for v in range(0, 11) if v != start])
        text = _pick(rng, ("Set the volume to {g} and press OK", "Drag Volume to {g}, then OK",
                           "Move the volume slider to {g} and click OK"), g=goal)
        return text, {"label": "Volume", "lo": 0, "hi": 10, "start": start}, goal

    def outcome(self, state, goal):
        sub = self.first_event(state, "submitted")
        return None if sub is None else sub.get("scale") == goal

    def expert(self, state, goal, point):
        t = state["targets"]
        have = state.get("values", {}).get("scale")
        if have != goal:
            a, b = t.get(f"scale:{have}"), t.get(f"scale:{goal}")
            return [Drag(*point(a), *point(b))] if a and b else []
        box = t.get("button:OK")
        return [Click(*point(box))] if box else []

    def target_word(self, state, goal):
        return "OK" if state.get("values", {}).get("scale") == goal else None


class MenuTask(AppTask):
    kind, heading = "menu", ""

    def generate(self, rng):
        title = rng.choice(list(MENUS))
        item = rng.choice(MENUS[title])
        text = _pick(rng, ("Choose {t} > {i} from the menu", "Open the {t} menu and click {i}",
                           "Select '{i}' in the {t} menu"), t=title, i=item)
        return text, {"menus": {k: list(v) for k, v in MENUS.items()}}, f"{title}>{item}"

    def outcome(self, state, goal):
        ev = self.first_event(state, "chosen")
        return None if ev is None else ev == goal

    def expert(self, state, goal, point):
        t = state["targets"]
        box = t.get(f"menuitem:{goal}")
        if box:
            return [Click(*point(box, 0.3))]
        box = t.get(f"menu:{goal.split('>')[0]}")
        return [Click(*point(box))] if box else []

    def target_word(self, state, goal):
        title, item = goal.split(">")
        return item if f"menuitem:{goal}" in state["targets"] else title


class DialogTask(AppTask):
    kind, heading = "dialog", "Files"

    def generate(self, rng):
        n = rng.randint(2, 9)
        goal = rng.choice(("yes", "no"))
        if goal == "yes":
            text = _pick(rng, ("Delete the files: press Delete files and confirm with Yes",
                               "Click Delete files, then answer Yes", "Remove the files (Delete files, then Yes)"))
        else:
            text = _pick(rng, ("Press Delete files, then change your mind: answer No",
                               "Click Delete files and answer No to the question",
                               "Open the Delete files dialog and say No"))
        return text, {"button": "Delete files", "title": "Confirm", "question": f"Delete {n} files?"}, goal

    def outcome(self, state, goal):
        ev = self.first_event(state, "answer")
        return None if ev is None else ev == goal

    def expert(self, state, goal, point):
        t = state["targets"]
        box = t.get(f"dialog:{goal.capitalize()}")
        if box:
            return [Click(*point(box))]
        if self.first_event(state, "answer") is None and "dialog:Yes" not in t:
            box = t.get("button:Delete files")
            return [Click(*point(box))] if box else []
        return []

    def target_word(self, state, goal):
        return goal.capitalize() if f"dialog:{goal.capitalize()}" in state["targets"] else "Delete"


# --- gtk3-widget-factory, read over AT-SPI ---------------------------------------------------------

class FactoryTask(AppTask):
    """A task in GTK's own ``gtk3-widget-factory``; its state comes from the accessibility tree
    (:func:`factory_state`): the first showing node of ``role`` with each of ``names`` (tree order)
    is a target, and the one whose ``state`` (checked/selected) is set is the value. Tasks on
    another ``page`` of the factory's stack first switch to it (the header bar's Page N buttons)."""

    role = ""
    names: tuple[str, ...] = ()
    state = "checked"
    initial: str | None = None  # the value at the start (anything else but the goal is a failure)
    page: str | None = None

    def __init__(self, kind: str):
        self.kind = kind
        super().__init__("gtk", "gtk3-widget-factory")

    def outcome(self, state, goal):
        now = state.get("values", {}).get(self.kind)
        if now == goal:
            return True
        return None if now in (None, self.initial) else False

    def expert(self, state, goal, point):
        t = state["targets"]
        if self.page and state.get("values", {}).get("factory-page") != self.page:
            box = t.get(f"factory-page:{self.page}")
        else:
            box = t.get(f"{self.kind}:{goal}")
        return [Click(*point(box))] if box else []

    def target_word(self, state, goal):
        if self.page and state.get("values", {}).get("factory-page") != self.page:
            return self.page.split()[-1]
        return goal.split()[-1]


class FactoryPageTask(FactoryTask):
    """The header bar's stack switcher (Page 1/2/3): radio buttons; CHECKED is the page shown."""

    role, names, initial = "radio button", ("Page 1", "Page 2", "Page 3"), "Page 1"

    def __init__(self):
        super().__init__("factory-page")

    def generate(self, rng):
        goal = rng.choice(self.names[1:])
        text = _pick(rng, ("Switch the widget factory to {g}", "Show {g}", "Go to \"{g}\" in the header bar"), g=goal)
        return text, {}, goal


class FactoryTabTask(FactoryTask):
    """The first notebook on Page 1 (tabs "page 1".."page 3"); SELECTED is the open tab."""

    role, names, state, initial = "page tab", ("page 1", "page 2", "page 3"), "selected", "page 1"

    def __init__(self):
        super().__init__("factory-tab")

    def generate(self, rng):
        goal = rng.choice(self.names[1:])
        text = _pick(rng, ("Open the tab {g} of the first notebook", "Click the notebook tab '{g}'",
                           "Select the \"{g}\" tab"), g=goal)
        return text, {}, goal


class FactoryTreeTask(FactoryTask):
    """Page 3's tree view of Charlemagne's family: a row chosen by name; SELECTED is its cell's state."""

    role, state, page = "table cell", "selected", "Page 3"
    names = ("Charlemagne", "Pepin the Short", "Charles Martel", "Pepin of Herstal", "Ansegisel", "Begga")

    def __init__(self):
        super().__init__("factory-tree")

    def generate(self, rng):
        goal = rng.choice(self.names)
        text = _pick(rng, ("On Page 3, select {g} in the family tree", "Go to Page 3 and click the row '{g}'",
                           "Select \"{g}\" in the tree on Page 3"), g=goal)
        return text, {}, goal


class FactoryToggleTask(FactoryTask):
    """Page 3's toggle buttons ("Record"); CHECKED is on."""

    role, names, page = "toggle button", ("Record",), "Page 3"

    def __init__(self):
        super().__init__("factory-toggle")

    def generate(self, rng):
        text = _pick(rng, ("On Page 3, switch Record on", "Go to Page 3 and press the Record toggle",
                           "Turn on \"Record\" (Page 3)"))
        return text, {}, "Record"


FACTORY = (FactoryPageTask, FactoryTabTask, FactoryTreeTask, FactoryToggleTask)


def factory_state(nodes: list[dict]) -> dict:
    """The accessibility tree of the widget factory (showing nodes, tree order) as a task state."""
    targets: dict = {}
    values: dict = {}
    for task in FACTORY:
        kind = task().kind
        seen = set()
        for n in nodes:
            box = n.get("box")
            if n["role"] != task.role or n["name"] not in task.names or n["name"] in seen:
                continue
            if not box or box[0] < 0 or box[1] < 0 or box[2] <= 0 or box[3] <= 0:
                continue  # scrolled out of view
            seen.add(n["name"])  # the first of each name in tree order (the first notebook)
            targets[f"{kind}:{n['name']}"] = box
            if task.state in n["states"]:
                values[kind] = n["name"]
    return {"targets": targets, "values": values, "events": []}


KINDS = (ButtonTask, FormTask, CheckTask, RadioTask, SettingsTask, ListTask, SpinTask, ScaleTask, MenuTask, DialogTask)
TOOLKITS = ("tk", "gtk")


def _build() -> dict[str, AppTask]:
    tasks: dict[str, AppTask] = {}
    for toolkit in TOOLKITS:
        for cls in KINDS:
            t = cls(toolkit)
            tasks[t.name] = t
    for cls in FACTORY:
        t = cls()
        tasks[t.name] = t
    return tasks


TASKS: dict[str, AppTask] = _build()
# Tasks no bundled checkpoint trains on: work the worker has never seen (teaching, held-out figures).
HELD_OUT = ("tk-settings", "gtk-settings")
