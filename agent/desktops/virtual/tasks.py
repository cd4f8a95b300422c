"""The virtual desktop's task suite: the 7 classic families and the registry of every family.

The base class and the shared word lists are in :mod:`agent.desktops.virtual.base` (outcome,
tail after success, the expert's protocol); the other families in
:mod:`agent.desktops.virtual.families`. ``TASKS`` lists the classic families first, then those.
"""

from __future__ import annotations

import random

from agent.desktops.virtual.base import (
    BUTTON_WORDS,
    CHECK_WORDS,
    DIALOGS,
    FIELD_NAMES,
    ICON_COLORS,
    ICON_NAMES,
    MENUS,
    PAD,
    TAIL_S,
    TASKBAR_H,
    TEXT_WORDS,
    WINDOW_TITLES,
    ButtonChoice,
    Task,
    _plain_list,
    _quote_list,
)
from agent.desktops.virtual.families import FAMILIES
from agent.desktops.virtual.render import Rect
from agent.desktops.virtual.widgets import (
    TITLE_H,
    Button,
    Checkbox,
    Icon,
    Label,
    MenuItem,
    MenuTitle,
    Panel,
    Slider,
    TextField,
    Widget,
    Window,
)
from policies.actions import Action, Drag, Key, MouseDown, MouseUp, Move, Type


class ClickButton(ButtonChoice):
    """Click the labelled button among several; any other button ends the episode as a failure."""

    name = "click-button"

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(WINDOW_TITLES), r.uniform(340, 560), r.uniform(200, 340))
        labels = r.sample(BUTTON_WORDS, r.randint(3, 6))
        cw = max(max(self.text_width(s) for s in labels) + 28, 80) + 12
        cells = self.cells(area, len(labels), cw, 40)
        self.buttons: list[Button] = []
        for label, cell in zip(labels, cells, strict=False):
            bw = max(80.0, round(self.text_width(label) + 28))
            b = Button(Rect(cell.x + round(r.uniform(0, cw - 12 - bw)), cell.y + 6, bw, 28), name=label, label=label)
            self.buttons.append(b)
            self.widgets.append(b)
        self.target = r.choice(self.buttons)
        self.instruction = self.phrase('Click the "{b}" button.', "Press {b}.", 'Choose "{b}".', b=self.target.label)


class ClickCheckboxes(Task):
    """Tick exactly the named check boxes, then press Submit (checked at Submit)."""

    name = "click-checkboxes"
    time_limit = 30.0

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(WINDOW_TITLES), r.uniform(340, 520), r.uniform(240, 360))
        labels = r.sample(CHECK_WORDS, r.randint(3, 6))
        cw = max(self.text_width(s) for s in labels) + 16 + 8 + 20
        rows_area = Rect(area.x, area.y, area.w, area.h - 40)
        cells = self.cells(rows_area, len(labels), cw, 30)
        self.boxes: list[Checkbox] = []
        for label, cell in zip(labels, cells, strict=False):
            cb = Checkbox(Rect(cell.x, cell.y + 3, round(16 + 8 + self.text_width(label) + 4), 24), name=label, label=label)
            self.boxes.append(cb)
            self.widgets.append(cb)
        k = r.randint(1, min(3, len(self.boxes) - 1))
        self.targets = r.sample(self.boxes, k)
        self.submit = Button(Rect(area.right - 90, area.bottom - 28, 90, 28), name="Submit", label="Submit", style="primary")
        self.widgets.append(self.submit)
        names = [b.label for b in self.boxes if b in self.targets]
        self.instruction = self.phrase("Select {q}, then click Submit.", "Tick {p} and press Submit.",
                                       "Check {q}, then Submit.", q=_quote_list(names), p=_plain_list(names))

    def correct(self) -> bool:
        return all(b.checked == (b in self.targets) for b in self.boxes)

    def on_activate(self, w: Widget, count: int) -> None:
        if w is self.submit:
            ok = self.correct()
            self.end(ok, "success" if ok else "wrong selection")

    def expert(self) -> list[Action]:
        for b in self.boxes:
            if b.checked != (b in self.targets):
                box = Rect(b.rect.x, b.rect.y, min(b.rect.w, 60), b.rect.h)
                return self.click(b, r=box)
        return self.click(self.submit)

    def target_word(self) -> str | None:
        return next((b.label for b in self.boxes if b.checked != (b in self.targets)), self.submit.label)


class EnterText(Task):
    """Type a word into the named field (focus it by clicking first) and press Enter."""

    name = "enter-text"

    def build(self) -> None:
        r = self.rng
        n = r.randint(1, 3)
        _, area = self.window(r.choice(WINDOW_TITLES), r.uniform(380, 560), 120 + 44 * n)
        names = r.sample(FIELD_NAMES, n)
        self.fields = self.field_rows(area, names, min(260.0, area.w - 100), area.bottom, label_w=90, field_x=96)
        self.target = r.choice(self.fields)
        self.word = r.choice(TEXT_WORDS)
        if len(self.fields) == 1:
            self.instruction = self.phrase('Type "{w}" into the text field and press Enter.',
                                           'Enter "{w}" in the text box, then press Enter.',
                                           'Write "{w}" in the field and hit Enter.', w=self.word)
        else:
            self.instruction = self.phrase('Type "{w}" into the "{f}" field and press Enter.',
                                           'Enter "{w}" in the {f} field, then press Enter.',
                                           'In the {f} box, write "{w}" and hit Enter.', w=self.word, f=self.target.name)

    def on_key(self, combo: str) -> bool:
        if combo in ("enter", "return") and isinstance(self.focus, TextField):
            ok = self.target.text == self.word
            self.end(ok, "success" if ok else "wrong text")
            return True
        return False

    def expert(self) -> list[Action]:
        f = self.target
        if self.human_like and f.focused and f.text != self.word and (
                f.selected or (f.text and self.word.startswith(f.text))):  # people type in bursts
            typed = "" if f.selected else f.text
            n = random.Random(f"burst/{self.seed}/{len(typed)}").randint(2, 4)
            return [Type(self.word[len(typed):][:n])]
        return self.fill(f, self.word) or [Key("enter")]  # click, ctrl+a, type: as the form experts fill

    def target_word(self) -> str | None:
        # with one field the instruction names none ("the text field")
        return self.target.name if len(self.fields) > 1 and not self.target.focused else None


class DragSlider(Task):
    """Set the slider to the value in the instruction, then press Submit.

    The expert drags the thumb close to the value, nudges it with the arrow keys until the
    printed value matches, then clicks Submit.
    """

    name = "drag-slider"

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(WINDOW_TITLES), r.uniform(420, 600), 190)
        what = r.choice(("Volume", "Brightness", "Opacity", "Zoom", "Speed", "Contrast", "Balance"))
        self.widgets.append(Label(Rect(area.x, area.y, 200, 20), text=what))
        sw = min(area.w, r.uniform(300, 420)) if area.w >= 300 else area.w
        self.slider = Slider(Rect(area.x, area.y + 28, round(sw), 28), name="slider", lo=0, hi=100)
        self.slider.value = r.randint(0, 100)
        self.goal = r.choice([v for v in range(0, 101) if abs(v - self.slider.value) >= 10])
        self.widgets.append(self.slider)
        self.submit = Button(Rect(area.right - 90, area.y + 76, 90, 28), name="Submit", label="Submit", style="primary")
        self.widgets.append(self.submit)
        self.instruction = self.phrase("Set the {s} slider to {g}, then click Submit.",
                                       "Move {s} to {g} and press Submit.", "Drag the {S} slider to {g}, then Submit.",
                                       s=what.lower(), S=what, g=str(self.goal))

    def thumb(self) -> Rect:
        s = self.slider
        x, cy = s.x_of(s.value), s.rect.center[1]
        return Rect(x - s.THUMB / 2, cy - s.THUMB / 2, s.THUMB, s.THUMB)

    def on_activate(self, w: Widget, count: int) -> None:
        if w is self.submit:
            ok = self.slider.value == self.goal
            self.end(ok, "success" if ok else "wrong value")

    NUDGE = 5  # within this many units of the goal, a focused slider is finished with arrow keys

    def _aim(self) -> int:
        """Where the expert's drag ends: the goal give or take up to 3 units (seeded).

        A person drags roughly and then nudges the focused slider with the arrow keys while
        reading the printed value; so does the expert, so demos teach the correction too (a
        drag that must land within ~1.5 points on a 5K screen is not what people do).
        """
        off = random.Random(f"aim/{self.seed}").randint(-3, 3)
        return min(self.slider.hi, max(self.slider.lo, self.goal + off))

    def expert(self) -> list[Action]:
        s = self.slider
        gx, gy = s.x_of(self._aim()), s.rect.center[1]
        if self.capture is s:  # human-like drag in progress
            if abs(self.cursor[0] - gx) > 1.5:
                return [Move(*self.norm(gx, gy))]
            return [MouseUp(*self.norm(*self.cursor))]
        if s.value == self.goal:
            return self.click(self.submit)
        if s.focused and abs(s.value - self.goal) <= self.NUDGE:
            return [Key("right" if s.value < self.goal else "left")]
        if not self.human_like:
            tx, ty = self.thumb().center
            return [Drag(*self.norm(tx, ty), *self.norm(gx, gy))]
        at = self.reach(self.thumb(), "thumb")
        return [at] if isinstance(at, Move) else [MouseDown(*self.norm(*at))]


class ClickMenu(Task):
    """Open the named menu in a menu bar and choose the named item; a wrong item fails."""

    name = "click-menu"

    def build(self) -> None:
        r = self.rng
        names = [m for m in MENUS if r.random() < 0.75] or ["File", "Edit"]
        if len(names) < 3:
            names = ["File", "Edit", "View"]
        longest = max(len(MENUS[m]) for m in names)
        popup_h = 26 * longest + 8
        win, area = self.window(r.choice(WINDOW_TITLES), r.uniform(420, 640), r.uniform(300, 420), menu_room=0)
        wr = win.rect
        bar = Rect(wr.x + 1, wr.y + TITLE_H + 2, wr.w - 2, 24)
        # keep every drop-down on screen: move the window up if needed
        overflow = bar.bottom + popup_h - (self.lh - TASKBAR_H)
        if overflow > 0:
            dy = min(overflow, wr.y)
            win.rect = Rect(wr.x, wr.y - dy, wr.w, wr.h)
            wr = win.rect
            bar = Rect(wr.x + 1, wr.y + TITLE_H + 2, wr.w - 2, 24)
        self.widgets.append(Panel(bar, fill="menubar"))
        self.widgets.append(Panel(Rect(wr.x + 12, bar.bottom + 10, wr.w - 24, wr.bottom - bar.bottom - 22),
                                  fill="content", outline="content_border"))
        x = bar.x + 4
        self.titles: list[MenuTitle] = []
        popups: list[Widget] = []
        for m in names:
            tw = round(self.text_width(m) + 20)
            if x + tw > bar.right:
                break
            title = MenuTitle(Rect(x, bar.y, tw, 24), name=m, label=m)
            items = list(MENUS[m])
            iw = max(150.0, max(self.text_width(s) for s in items) + 40)
            px = min(x, self.lw - iw - 2)
            popup = Panel(Rect(px, bar.bottom, iw, 26 * len(items) + 8), fill="popup", outline="popup_border",
                          visible=False)
            title.popup = popup
            popups.append(popup)
            for i, s in enumerate(items):
                it = MenuItem(Rect(px + 1, bar.bottom + 4 + 26 * i, iw - 2, 26), name=f"{m}/{s}", label=s, menu=m,
                              visible=False)
                title.items.append(it)
                popups.append(it)
            self.titles.append(title)
            self.widgets.append(title)
            x += tw
        self.widgets.extend(popups)
        self.menu = r.choice(self.titles)
        self.item = r.choice(self.menu.items)
        self.instruction = self.phrase('Choose "{i}" from the "{m}" menu.', "Open the {m} menu and click {i}.",
                                       'Select {m} > "{i}".', i=self.item.label, m=self.menu.label)

    def on_activate(self, w: Widget, count: int) -> None:
        if isinstance(w, MenuItem):
            self.set_menu(None)
            self.end(w is self.item, "success" if w is self.item else "wrong item")

    def expert(self) -> list[Action]:
        if self.open_menu is not self.menu:
            if self.human_like and self.open_menu is not None:
                return [Key("escape")]
            return self.click(self.menu)
        return self.click_entry(self.item)

    def target_word(self) -> str | None:
        return self.item.label if self.open_menu is self.menu else self.menu.label


class CloseDialog(Task):
    """Close a modal dialog with its × (or its Close button), not with one of its options."""

    name = "close-dialog"

    def build(self) -> None:
        r = self.rng
        self.window(r.choice(("Untitled - Editor", "Inbox - Mail", "Photos", "Budget.xlsx")), r.uniform(480, 760),
                    r.uniform(320, 480))
        self.widgets.append(Label(Rect(self.widgets[-1].rect.x + 20, self.widgets[-1].rect.y + TITLE_H + 20, 300, 20),
                                  text="Lorem ipsum dolor sit amet.", color="muted"))
        title, message, options = r.choice(DIALOGS)
        with_close = r.random() < 0.5
        labels = list(options) + (["Close"] if with_close else [])
        r.shuffle(labels)
        widths = [max(80.0, round(self.text_width(s) + 28)) for s in labels]
        dw = min(self.lw - 16, max(360.0, self.text_width(message) + 48, sum(widths) + 8 * len(widths) + 40))
        dh = min(self.lh - TASKBAR_H - 16, 150.0)
        dx = 8 + (self.lw - 16 - dw) * r.uniform(0.3, 0.7)
        dy = 8 + (self.lh - TASKBAR_H - 16 - dh) * r.uniform(0.25, 0.6)
        dlg = Window(Rect(round(dx), round(dy), round(dw), dh), name="dialog", title=title, group="dialog")
        self.dialog = dlg
        self.widgets.append(dlg)
        dr = dlg.rect
        self.widgets.append(Label(Rect(dr.x + PAD, dr.y + TITLE_H + 14, dr.w - 2 * PAD, 20), text=message,
                                  group="dialog"))
        self.close_x = Button(Rect(dr.right - 30, dr.y + 3, 26, TITLE_H - 6), name="×", style="close", group="dialog")
        self.widgets.append(self.close_x)
        self.options: list[Button] = []
        self.close_button: Button | None = None
        x = dr.right - PAD
        for label, bw in zip(reversed(labels), reversed(widths), strict=True):
            x -= bw
            b = Button(Rect(x, dr.bottom - PAD - 28, bw, 28), name=label, label=label, group="dialog")
            x -= 8
            self.widgets.append(b)
            if label == "Close":
                self.close_button = b
            else:
                self.options.append(b)
        self.modal = "dialog"
        self._use_button = self.close_button is not None and r.random() < 0.5
        how = "its Close button or the X in its title bar" if with_close else "the X in its title bar"
        self.instruction = self.phrase('Close the "{t}" dialog with {h}, without choosing an option.',
                                       "Dismiss the {t} dialog using {h}; choose no option.",
                                       'Shut "{t}" with {h}, not with one of its buttons.', t=title, h=how)

    def _dismiss(self) -> None:
        for w in self.widgets:
            if w.group == "dialog":
                w.visible = False
        self.modal = None

    def on_activate(self, w: Widget, count: int) -> None:
        if w is self.close_x or w is self.close_button:
            self._dismiss()
            self.end(True, "success")
        elif w in self.options:
            self._dismiss()
            self.end(False, "wrong button")

    def expert(self) -> list[Action]:
        if self._use_button and self.close_button is not None:
            return self.click(self.close_button)
        return self.click(self.close_x)


class DoubleClickIcon(Task):
    """Double-click the named desktop icon; a single click only selects it."""

    name = "double-click-icon"

    def build(self) -> None:
        r = self.rng
        area = Rect(8, 8, self.lw - 16, self.lh - TASKBAR_H - 16)
        labels = r.sample(ICON_NAMES, r.randint(4, 8))
        cells = self.cells(area, len(labels), 100, 88)
        self.icons: list[Icon] = []
        for label, cell in zip(labels, cells, strict=False):
            w = max(84.0, round(self.text_width(label, 12.0) + 16))
            ic = Icon(Rect(cell.x + (100 - w) / 2, cell.y + 4, w, 80), name=label, label=label,
                      color=r.choice(ICON_COLORS), kind=r.choice(("folder", "folder", "document")))
            self.icons.append(ic)
            self.widgets.append(ic)
        self.target = r.choice(self.icons)
        self.opened: Window | None = None
        self.instruction = self.phrase('Open "{i}" by double-clicking its icon.', "Double-click the {i} icon.",
                                       'Launch "{i}" from the desktop with a double click.', i=self.target.label)

    def on_background_click(self, x: float, y: float, count: int) -> None:
        for ic in self.icons:
            ic.selected = False

    def on_activate(self, w: Widget, count: int) -> None:
        if isinstance(w, Icon) and count >= 2:
            self.end(w is self.target, "success" if w is self.target else "wrong icon")

    def expert(self) -> list[Action]:
        return self.click(self.target, count=2)

    def target_word(self) -> str | None:
        return self.target.label


CLASSIC: tuple[type[Task], ...] = (ClickButton, ClickCheckboxes, EnterText, DragSlider, ClickMenu, CloseDialog,
                                   DoubleClickIcon)
CLASSIC_TASKS: tuple[str, ...] = tuple(cls.name for cls in CLASSIC)  # the families the bundled checkpoints learned
TASKS: dict[str, type[Task]] = {cls.name: cls for cls in CLASSIC}

TASKS.update((cls.name, cls) for cls in FAMILIES)


def task_names() -> list[str]:
    """The names of the built-in tasks, in a stable order."""
    return list(TASKS)


__all__ = ["BUTTON_WORDS", "CHECK_WORDS", "CLASSIC_TASKS", "DIALOGS", "FIELD_NAMES", "ICON_COLORS", "ICON_NAMES",
           "MENUS", "PAD", "TAIL_S", "TASKBAR_H", "TASKS", "TEXT_WORDS", "WINDOW_TITLES", "Task", "task_names"]
