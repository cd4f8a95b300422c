"""The base of every virtual-desktop task: seeded scenes with an instruction, a goal and an expert.

A task is the desktop's ``oracle``. ``expert_actions()`` is a pure function of the current
state (widgets, cursor, actions applied so far) and the seed, so a replay that re-applies
recorded actions to a fresh desktop can consult the expert at any step and get the same answer.
With ``human_like`` the expert pauses to read, then reaches each target through a few
``move`` steps along a curved, seeded path (ballistic first, then corrective), and clicks
where the cursor landed, slightly off-centre.

Outcome: ``success`` is decided by the task's check the moment it passes (or fails: a wrong
button, item or icon; a wrong answer submitted), and never changes afterwards. A failure ends the
episode at once. After a success the world goes on for a tail of ``TAIL_S`` virtual seconds: the
desktop keeps rendering and reacting (so a policy sees finished screens and can learn to stop),
then the episode is ``finished``. ``done`` ends it earlier; the experts end every episode with
``done`` a moment after success. Past ``time_limit`` without an outcome the episode times out.
After the end the desktop ignores actions.
"""

from __future__ import annotations

import math
import random
import re
from typing import ClassVar

from agent.desktops.virtual.render import Rect
from agent.desktops.virtual.themes import CLASSIC, Look
from agent.desktops.virtual.widgets import (
    ENTRY_TEXT_X,
    TITLE_H,
    Button,
    Label,
    MenuItem,
    Panel,
    Scene,
    TextField,
    Widget,
    Window,
)
from capture import Screen
from policies.actions import Action, Click, Done, Key, Move, Type, Wait

TASKBAR_H = 32.0
PAD = 16.0
TAIL_S = 1.5  # after success the desktop goes on this long (virtual seconds) unless `done` ends it
DONE_AFTER_S = 0.3  # the plain expert looks at the finished screen this long, then says done

BUTTON_WORDS = (
    "OK", "Cancel", "Apply", "Save", "Delete", "Open", "Next", "Back", "Submit", "Retry", "Help",
    "Search", "Print", "Share", "Copy", "Edit", "Send", "Reset", "Export", "Import", "Undo",
    "Continue", "Skip", "Accept", "Decline", "Upload", "Rename", "Refresh", "Archive", "Finish",
)
CHECK_WORDS = (
    "Apple", "Banana", "Cherry", "Grape", "Lemon", "Mango", "Orange", "Peach", "Pear", "Plum",
    "Red", "Green", "Blue", "Yellow", "Purple", "Email", "Phone", "Letter", "Weekly", "Monthly",
    "Bold", "Italic", "Underline", "Wi-Fi", "Bluetooth", "Location", "Camera", "Sound",
)
TEXT_WORDS = (
    "falcon", "harbor", "maple", "violet", "copper", "tundra", "lantern", "pepper", "meadow",
    "signal", "orbit", "cobalt", "willow", "summit", "breeze", "glacier", "ember", "quartz",
    "river", "canyon", "zephyr", "almond", "beacon", "cedar", "delta", "fjord", "garnet",
)
# Single words of every length (2 to 14 letters) for the typing families beyond the classic seven,
# whose words (TEXT_WORDS) are all 5-7 letters: a policy should copy a word of any length.
ANY_WORDS = ("ox", "go", "sky", "ink", "jam", "plum", "tide", "quiet", "sparrow", "horizon", "umbrella",
             "yesterday", "marathon", "midnight", "blueberry", "spreadsheet", "kaleidoscope", "nightingale",
             "photosynthesis", "elm", "fig", "kiwi", "lagoon", "avalanche", "thunderstorm", "pebble", "zinc")


# What people type into forms, by what a field asks for: varied lengths (2 to ~24 characters), case,
# digits, spaces and punctuation, so a policy learns to copy whatever the instruction quotes, not
# words of one length. (None of these is in examples/workflows/rows.csv, which evaluates forms.)
PEOPLE = ("Mia", "noah", "Olivia", "liam", "Aiko", "Mateo", "Zara", "Ivan", "Leila", "Oskar", "Chen Wei",
          "Fatima", "jo", "Emeka", "Ingrid", "Rafael", "Sven", "Nadia", "Kwame", "Lucia", "Tomasz", "Yara")
SURNAMES = ("Okafor", "Lindqvist", "Moreau", "Tanaka", "Novak", "Haddad", "Silva", "Kowalski", "Byrne", "Rossi")
PLACES = ("Lisbon", "Nairobi", "Osaka", "Quito", "Reykjavik", "Turin", "Porto Alegre", "Tbilisi", "Perth",
          "Gdansk", "Santa Fe", "Kyoto", "Accra", "Bergen", "Lyon", "Cork", "San Jose", "Tallinn")
COMPANIES = ("Acme Corp", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay Industries", "Stark & Co",
             "Wayne Ent.", "Tyrell", "Cyberdyne", "Soylent", "Oscorp", "Aperture Labs")
COUNTRIES = ("Portugal", "Kenya", "Japan", "Ecuador", "Iceland", "Italy", "Georgia", "New Zealand", "Ghana",
             "Norway", "Chile", "Viet Nam", "Costa Rica")
MAIL_HOSTS = ("mail", "post", "inbox", "corp", "acme", "web", "home", "uni", "studio", "mx")
MAIL_TLDS = ("com", "org", "net", "io", "dev", "de", "fr", "co.uk", "edu", "test")
STREETS = ("Elm Street", "Oak Ave", "Rue Cler", "Hauptstrasse", "Main St", "Calle Mayor", "Kings Road")


def field_text(r, field: str) -> str:
    """A value a person types into a form field named ``field`` (seeded by ``r``)."""
    person = r.choice(PEOPLE)
    if field in ("Name", "Nickname"):
        return person if r.random() < 0.5 or field == "Nickname" else f"{person} {r.choice(SURNAMES)}"
    if field == "Username":
        return f"{person.split()[0].lower()}{r.choice(('', '_', '.'))}{r.randint(1, 9999)}"
    if field == "Email":  # the shapes addresses take, on many domains
        first, last = person.split()[0].lower(), r.choice(SURNAMES).lower()
        local = r.choice((first, f"{first}.{last}", f"{first}_{last}", f"{first[0]}{last}", f"{first}{r.randint(1, 99)}"))
        return f"{local}@{r.choice(MAIL_HOSTS)}.{r.choice(MAIL_TLDS)}"
    if field in ("City", "Country"):
        return r.choice(PLACES if field == "City" else COUNTRIES)
    if field == "Street":
        return f"{r.randint(1, 999)} {r.choice(STREETS)}"
    if field == "Company":
        return r.choice(COMPANIES)
    return r.choice(TEXT_WORDS + BUTTON_WORDS + CHECK_WORDS) + r.choice(("", "", f" {r.randint(2, 99)}"))


_FREE_WORDS = ANY_WORDS + TEXT_WORDS + PEOPLE + SURNAMES + PLACES  # what free_text draws from


def free_text(r, lo: int = 2, hi: int = 32) -> str:
    """Words, names and numbers cut to a length drawn evenly from ``lo`` to ``hi``: every length of
    value in a typing instruction, where :func:`field_text`'s lengths bunch (few of 15 to 20)."""
    n, parts = r.randint(lo, hi), []
    while len(" ".join(parts)) < n:
        w = r.choice(_FREE_WORDS) if r.random() < 0.85 else str(r.randint(0, 9999))
        parts.append(w.capitalize() if r.random() < 0.3 else w)
    return " ".join(parts)[:n].strip()


FIELD_NAMES = ("Name", "City", "Email", "Username", "Company", "Country", "Title", "Street", "Nickname")
WINDOW_TITLES = (
    "Settings", "Preferences", "Document", "Options", "Account", "Project", "Confirm", "Tools",
    "Profile", "Export", "Properties", "Setup",
)
MENUS: dict[str, tuple[str, ...]] = {
    "File": ("New", "Open...", "Save", "Save As...", "Export", "Print...", "Close"),
    "Edit": ("Undo", "Redo", "Cut", "Copy", "Paste", "Select All", "Find..."),
    "View": ("Zoom In", "Zoom Out", "Full Screen", "Sidebar", "Status Bar", "Ruler"),
    "Insert": ("Image", "Table", "Link", "Chart", "Comment", "Page Break"),
    "Format": ("Font...", "Paragraph", "Bullets", "Columns", "Borders"),
    "Tools": ("Spelling", "Word Count", "Macros", "Options...", "Extensions"),
    "Help": ("Contents", "Shortcuts", "Check for Updates", "About"),
}
DIALOGS = (
    ("Unsaved changes", "Save changes to \"report.txt\" before closing?", ("Save", "Don't Save")),
    ("Update available", "A new version is ready to install.", ("Install", "Later")),
    ("Delete file", "Move \"photo.png\" to the Trash?", ("Delete", "Keep")),
    ("Print", "Print 3 pages on the default printer?", ("Print", "Preview")),
    ("Replace file", "A file named \"notes.md\" already exists.", ("Replace", "Rename")),
    ("Sign in", "Your session has expired.", ("Sign In", "Use Another Account")),
    ("Low battery", "12% battery remaining.", ("Power Saver", "Settings")),
)
ICON_NAMES = (
    "Documents", "Photos", "Music", "Reports", "Budget", "Notes", "Projects", "Downloads",
    "Games", "Mail", "Calendar", "Backup", "Invoices", "Recipes", "Travel", "Videos", "Drafts",
)
ICON_COLORS = ((236, 184, 64), (90, 160, 230), (120, 190, 110), (220, 110, 100), (170, 130, 210))


def _plain_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _quote_list(items: list[str]) -> str:
    return _plain_list([f'"{s}"' for s in items])


class Task(Scene):
    """Base of every task: seeded layout, instruction, outcome, and the expert.

    ``screen`` gives the physical size and scale; layout happens in the logical space
    ``screen.width / scale`` x ``screen.height / scale`` points.
    """

    name: ClassVar[str] = ""
    time_limit: ClassVar[float] = 20.0

    def __init__(self, seed: int, screen: Screen, human_like: bool = False, look: Look = CLASSIC):
        super().__init__()
        self.look = look
        self.seed = int(seed)
        self.screen = screen
        self.scale = screen.scale
        self.human_like = human_like
        self.lw = screen.width / screen.scale
        self.lh = screen.height / screen.scale
        self.rng = random.Random(f"{self.name}/{self.seed}")
        self.instruction = ""
        self.success: bool | None = None
        self.finished = False
        self.reason: str | None = None
        self.steps = 0  # actions applied so far (the desktop counts them)
        self.t = 0.0
        self.success_t: float | None = None  # when the check passed (virtual seconds)
        self.tail = TAIL_S  # the desktop sets it (0: a session from before the tail existed)
        self.widgets.append(Panel(Rect(0, self.lh - TASKBAR_H, self.lw, TASKBAR_H), fill="taskbar"))
        self.widgets.append(Panel(Rect(8, self.lh - TASKBAR_H + 6, 20, 20), fill="taskbar_button"))
        self.build()
        self.cursor = (self.rng.uniform(0.1, 0.9) * self.lw, self.rng.uniform(0.1, 0.8) * self.lh)

    # -- building helpers ----------------------------------------------------------------------
    def build(self) -> None:  # pragma: no cover - every task overrides
        raise NotImplementedError

    def text_width(self, s: str, size: float = 13.0, bold: bool = False) -> float:
        """Width of ``s`` in logical points in this episode's face and size."""
        return self.look.text_width(s, size, bold)

    def window(self, title: str, want_w: float, want_h: float, menu_room: float = 0.0) -> tuple[Window, Rect]:
        """Add a window of about the wanted size at a seeded place; returns it and its content area."""
        avail_w, avail_h = self.lw - 16, self.lh - TASKBAR_H - 16
        w = min(want_w, avail_w)
        h = min(want_h, avail_h)
        x = 8 + self.rng.uniform(0, avail_w - w)
        y = 8 + self.rng.uniform(0, max(0.0, avail_h - h - menu_room))
        win = Window(Rect(round(x), round(y), round(w), round(h)), title=title)
        self.widgets.append(win)
        r = win.rect
        return win, Rect(r.x + PAD, r.y + TITLE_H + PAD, r.w - 2 * PAD, r.h - TITLE_H - 2 * PAD)

    def button_grid(self, area: Rect, labels: list[str]) -> list[Button]:
        """A button for each of ``labels`` (fewer if they do not fit), each in a seeded cell of a grid
        over ``area`` wide enough for the longest label (:meth:`cells`, :meth:`add_button`)."""
        cw = max(max(self.text_width(s) for s in labels) + 28, 80) + 12
        return [self.add_button(c.x, c.y + 6, s) for s, c in zip(labels, self.cells(area, len(labels), cw, 40), strict=False)]

    def cells(self, area: Rect, n: int, cw: float, ch: float) -> list[Rect]:
        """``n`` seeded, distinct grid cells of size ``cw`` x ``ch`` inside ``area`` (fewer if they do not fit)."""
        cols = max(1, int(area.w // cw))
        rows = max(1, int(area.h // ch))
        picks = self.rng.sample(range(cols * rows), min(n, cols * rows))
        gx = (area.w - cols * cw) / cols if cols * cw <= area.w else 0.0
        gy = (area.h - rows * ch) / rows if rows * ch <= area.h else 0.0
        return [
            Rect(round(area.x + (i % cols) * (cw + gx)), round(area.y + (i // cols) * (ch + gy)), cw, ch)
            for i in picks
        ]

    # -- outcome -------------------------------------------------------------------------------
    def end(self, success: bool, reason: str) -> None:
        """Decide the outcome (once): a failure finishes the episode now, a success after the tail."""
        if self.reason is None and not self.finished:
            self.success = success
            self.reason = reason
            if not success:
                self.finished = True

    def tick(self, t: float) -> None:
        """The desktop's clock moved to ``t``: timed events, the tail after success, the time limit."""
        self.t = t
        if self.finished:
            return
        self.on_tick(t)
        if self.success:
            if self.success_t is None:
                self.success_t = t
            if t - self.success_t >= self.tail:
                self.finished = True
        elif self.reason is None and t >= self.time_limit:
            self.end(False, "timeout")

    def done(self) -> None:
        """``done``: the episode ends now; before an outcome it is a failure ("done")."""
        self.end(False, "done")
        self.finished = True

    # -- the expert ----------------------------------------------------------------------------
    def expert_actions(self) -> list[Action]:
        """The expert's next action(s) from the current state ([] once the episode is over)."""
        if self.finished or self.success is False:
            return []
        if self.success:  # look at the finished screen a moment, then say so
            pause = (random.Random(f"done/{self.name}/{self.seed}").uniform(0.3, 0.8) if self.human_like
                     else DONE_AFTER_S)
            since = self.t - (self.t if self.success_t is None else self.success_t)
            left = round(pause - since, 3)
            return [Done()] if left <= 0.0 else [Wait(left)]
        if self.human_like and self.steps == 0:
            return [Wait(round(random.Random(f"read/{self.name}/{self.seed}").uniform(0.5, 1.1), 3))]
        return self.expert()

    def expert(self) -> list[Action]:  # pragma: no cover - every task overrides
        raise NotImplementedError

    def expert_target(self) -> str | None:
        """The word on screen that names what the expert's next action points at (a button's
        label, a field's name), or None where no word of the instruction does (a slider's thumb,
        a key). Demos record it beside each step (:data:`agent.sessions.format.EXPERT_TARGET`), so training
        can teach a reading model which of the instruction's words to look for. None once the
        outcome is decided (the expert's wait and ``done`` point at nothing). Tasks define
        :meth:`target_word`."""
        if self.success is not None or self.finished:
            return None
        return self.target_word()

    def target_word(self) -> str | None:
        """:meth:`expert_target` while the task is under way."""
        return None

    def norm(self, x: float, y: float) -> tuple[float, float]:
        """A logical point to the normalised coordinates of the physical pixel under it."""
        s = self.scale
        px = min(self.screen.width - 1, max(0, math.floor(x * s)))
        py = min(self.screen.height - 1, max(0, math.floor(y * s)))
        return self.screen.to_normalised(px, py)

    def _inner(self, r: Rect) -> Rect:
        return r.inset(min(3.0, r.w / 4, r.h / 4))

    def _goal(self, r: Rect, key: str) -> tuple[float, float]:
        """A seeded point near the centre of ``r`` (where a person would aim)."""
        if not self.human_like:
            return r.center
        g = random.Random(f"goal/{self.seed}/{key}")
        inner = self._inner(r)
        cx, cy = inner.center
        return cx + g.uniform(-0.25, 0.25) * inner.w, cy + g.uniform(-0.25, 0.25) * inner.h

    def reach(self, r: Rect, key: str) -> tuple[float, float] | Move:
        """Human-like: the next ``Move`` toward ``r``, or the cursor position once it is inside.

        Not human-like: the centre of ``r`` (the expert teleports).
        """
        if not self.human_like:
            return r.center
        cx, cy = self.cursor
        if self._inner(r).contains(cx, cy):
            return cx, cy
        gx, gy = self._goal(r, key)
        d = math.hypot(gx - cx, gy - cy)
        if d < 40:
            return Move(*self.norm(gx, gy))
        g = random.Random(f"path/{self.seed}/{key}/{round(cx)}/{round(cy)}")
        f = g.uniform(0.55, 0.8)
        bend = g.uniform(-0.12, 0.12) * d
        ux, uy = (gx - cx) / d, (gy - cy) / d
        nx = min(self.lw - 1, max(0.0, cx + (gx - cx) * f - uy * bend))
        ny = min(self.lh - 1, max(0.0, cy + (gy - cy) * f + ux * bend))
        return Move(*self.norm(nx, ny))

    def click(self, w: Widget, count: int = 1, r: Rect | None = None, button: str = "left") -> list[Action]:
        """Click ``w`` (or the part ``r`` of it): one ``Click``, or a human-like approach step."""
        at = self.reach(r or w.rect, w.name)
        if isinstance(at, Move):
            return [at]
        return [Click(*self.norm(*at), button=button, count=count)]

    def click_entry(self, item: MenuItem) -> list[Action]:
        """Click a menu entry on its label, as a person aims: the rest of the row is blank, and
        the label is what the instruction names."""
        x = item.rect.x + ENTRY_TEXT_X
        return self.click(item, r=Rect(x - 2, item.rect.y, self.text_width(item.label) + 4, item.rect.h))

    # -- helpers for the families ----------------------------------------------------------------
    def phrase(self, *templates: str, **values: str) -> str:
        """One of ``templates`` (seeded), filled with ``values``: instructions come in several phrasings.

        The phrasing is drawn apart from the layout (its own generator), so a seed gives the same
        screen whichever phrasing it gets.
        """
        return random.Random(f"phrase/{self.name}/{self.seed}").choice(templates).format(**values)

    def named(self, word: str | None) -> str | None:
        """``word`` if the instruction names it as a whole word (an expert target), else None."""
        if word and re.search(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", self.instruction):
            return word
        return None

    def fill(self, f: TextField, want: str) -> list[Action]:
        """The next action that makes ``f`` hold ``want``, whatever it shows, as a careful person
        fills a form: click it, select all it holds (ctrl+a, also when it looks empty), type ``want``
        over it. [] once it holds ``want``. Reading the field is never needed to choose the action."""
        if f.text == want:
            return []
        if not f.focused:
            return self.click(f)
        if not f.selected:
            return [Key("ctrl+a")]
        return [Type(want)]

    def field_rows(self, area: Rect, names: list[str], width: float, bottom: float, label_w: float = 100,
                   field_x: float = 104) -> list[TextField]:
        """A form's text fields, one a row (44 points apart) from the top of ``area``, each after its
        label ("Name:"), as many of ``names`` as fit above ``bottom``."""
        fields: list[TextField] = []
        for i, name in enumerate(names):
            y = area.y + i * 44
            if y + 28 > bottom:
                break
            self.widgets.append(Label(Rect(area.x, y, label_w, 28), text=f"{name}:"))
            f = TextField(Rect(area.x + field_x, y, width, 28), name=name)
            fields.append(f)
            self.widgets.append(f)
        return fields

    def add_button(self, x: float, y: float, label: str, style: str = "normal", group: str = "main",
                   min_w: float = 80.0) -> Button:
        b = Button(Rect(round(x), round(y), max(min_w, round(self.text_width(label) + 28)), 28), name=label,
                   label=label, style=style, group=group)
        self.widgets.append(b)
        return b

    def button_row(self, right: float, y: float, labels, **kw) -> list[Button]:
        """Buttons for ``labels`` (:meth:`add_button`'s sizes, ``kw`` its options) in a row that ends at
        ``right``, 8 points apart; the first label is the rightmost."""
        row, x = [], right
        for label in labels:
            b = self.add_button(0, y, label, **kw)
            x -= b.rect.w
            b.rect = Rect(round(x), b.rect.y, b.rect.w, b.rect.h)
            x -= 8
            row.append(b)
        return row


class ButtonChoice(Task):
    """A task won by clicking its ``target`` button; any other button ends it as a failure."""

    target: Button

    def on_activate(self, w: Widget, count: int) -> None:
        if isinstance(w, Button):
            self.end(w is self.target, "success" if w is self.target else "wrong button")

    def expert(self) -> list[Action]:
        return self.click(self.target)

    def target_word(self) -> str | None:
        return self.target.label


__all__ = ["ANY_WORDS", "BUTTON_WORDS", "ButtonChoice", "CHECK_WORDS", "DIALOGS", "FIELD_NAMES", "field_text", "free_text", "ICON_COLORS", "ICON_NAMES", "MENUS", "PAD",
           "TAIL_S", "TASKBAR_H", "TEXT_WORDS", "WINDOW_TITLES", "Task"]
