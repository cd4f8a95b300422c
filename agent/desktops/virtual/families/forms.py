"""Form controls: a drop-down, a radio group, switches, a spin box, a multi-field form, tabs and
a date picker. Each family: seeded layout, instructions in several phrasings, a check at an
explicit commit (OK / Apply / Submit, or the named button), and a scripted expert."""

from __future__ import annotations

import datetime as dt
import string

from agent.desktops.virtual.base import (
    BUTTON_WORDS,
    FIELD_NAMES,
    WINDOW_TITLES,
    ButtonChoice,
    Task,
    field_text,
    free_text,
)
from agent.desktops.virtual.controls import ArrowButton, DropDown, RadioButton, Switch, Tab
from agent.desktops.virtual.render import Rect
from agent.desktops.virtual.widgets import Button, Label, MenuItem, Panel, TextField, Widget
from policies.actions import Action, Key

CHOICES = {
    "Color": ("Red", "Green", "Blue", "Yellow", "Purple", "Orange", "Black", "White"),
    "Country": ("France", "Japan", "Brazil", "Canada", "Kenya", "Norway", "Peru", "India"),
    "Size": ("Small", "Medium", "Large", "Huge", "Tiny"),
    "Language": ("English", "German", "Spanish", "Italian", "Dutch", "Polish", "Greek"),
    "Priority": ("Low", "Normal", "High", "Urgent"),
    "Format": ("PDF", "PNG", "JPEG", "TIFF", "SVG", "Text"),
}
RADIO = {
    "Shipping": ("Standard", "Express", "Overnight", "Pickup"),
    "Theme": ("Light", "Dark", "Automatic"),
    "Quality": ("Draft", "Normal", "Best"),
    "Layout": ("Portrait", "Landscape"),
    "Payment": ("Card", "Invoice", "Transfer", "Cash"),
    "Alignment": ("Left", "Center", "Right", "Justify"),
}
SWITCHES = ("Wi-Fi", "Bluetooth", "Location", "Camera", "Sound", "Notifications", "Autosave", "Sync", "Hotspot",
            "Backups")
SPIN = ("Copies", "Columns", "Margin", "Rows", "Quantity", "Volume", "Retries", "Timeout")
TABS = ("General", "Network", "Display", "Security", "Sharing", "Privacy", "Advanced", "Storage")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


class _Commit(Task):
    """A family whose answer is checked when its commit button is pressed."""

    commit: Button

    def correct(self) -> bool:  # pragma: no cover - every family overrides
        raise NotImplementedError

    def on_activate(self, w: Widget, count: int) -> None:
        if w is self.commit:
            ok = self.correct()
            self.end(ok, "success" if ok else "wrong answer")


class SelectDropdown(_Commit):
    """Open a drop-down, choose the named option, then press OK."""

    name = "select-dropdown"

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(WINDOW_TITLES), r.uniform(360, 520), r.uniform(260, 320))
        self.field = r.choice(list(CHOICES))
        options = r.sample(CHOICES[self.field], min(len(CHOICES[self.field]), r.randint(4, 6)))
        self.widgets.append(Label(Rect(area.x, area.y, 90, 28), text=f"{self.field}:"))
        ddw = max(160.0, max(self.text_width(o) for o in options) + 48)
        self.box = DropDown(Rect(area.x + 100, area.y, round(ddw), 28), name=self.field)
        self.widgets.append(self.box)
        self.commit = self.add_button(area.right - 90, area.bottom - 28, "OK", "primary")
        top = self.box.rect.bottom + 2
        self.popup = Panel(Rect(self.box.rect.x, top, ddw, 26 * len(options) + 8), fill="popup",
                           outline="popup_border", visible=False)
        self.widgets.append(self.popup)
        self.items: list[MenuItem] = []
        for i, o in enumerate(options):
            it = MenuItem(Rect(self.box.rect.x + 1, top + 4 + 26 * i, ddw - 2, 26), name=o, label=o, visible=False)
            self.items.append(it)
            self.widgets.append(it)
        self.target = r.choice([o for o in options])
        self.instruction = self.phrase(
            'Choose "{v}" from the {f} drop-down, then click OK.',
            "Set {f} to {v} and press OK.",
            'Pick {v} in the "{f}" list, then click OK.',
            f=self.field, v=self.target)

    def show(self, on: bool) -> None:
        self.box.open = on
        self.popup.visible = on
        for it in self.items:
            it.visible = on
            it.hovered = it.hovered and on

    def on_activate(self, w: Widget, count: int) -> None:
        if w is self.box:
            self.show(not self.box.open)
        elif isinstance(w, MenuItem):
            self.box.value = w.label
            self.show(False)
        else:
            super().on_activate(w, count)

    def on_background_click(self, x: float, y: float, count: int) -> None:
        self.show(False)

    def correct(self) -> bool:
        return self.box.value == self.target

    def expert(self) -> list[Action]:
        if self.box.value != self.target:
            if not self.box.open:
                return self.click(self.box)
            return self.click_entry(next(i for i in self.items if i.label == self.target))
        if self.box.open:
            return self.click(self.box)
        return self.click(self.commit)

    def target_word(self) -> str | None:
        if self.box.value != self.target:
            return self.named(self.target) if self.box.open else None
        return self.named("OK")


class SelectRadio(_Commit):
    """Choose the named option of a radio group, then press the commit button."""

    name = "select-radio"

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(WINDOW_TITLES), r.uniform(340, 480), r.uniform(240, 300))
        self.group = r.choice(list(RADIO))
        opts = list(RADIO[self.group])
        self.widgets.append(Label(Rect(area.x, area.y, 200, 24), text=f"{self.group}:", bold=True))
        self.radios: list[RadioButton] = []
        horizontal = r.random() < 0.4 and len(opts) <= 3
        x, y = area.x + 8, area.y + 30
        for o in opts:
            w = round(16 + 8 + self.text_width(o) + 6)
            rb = RadioButton(Rect(x, y, w, 26), name=o, label=o)
            self.radios.append(rb)
            self.widgets.append(rb)
            if horizontal:
                x += w + 24
            else:
                y += 30
        r.choice(self.radios).checked = True
        self.target = r.choice([b for b in self.radios if not b.checked])
        label = r.choice(("OK", "Apply", "Save"))
        self.commit = self.add_button(area.right - 90, area.bottom - 28, label, "primary")
        self.instruction = self.phrase(
            'Select "{v}" and click {c}.',
            "Choose the {v} option for {g}, then press {c}.",
            'Set {g} to "{v}", then click {c}.',
            v=self.target.label, g=self.group, c=label)

    def on_activate(self, w: Widget, count: int) -> None:
        if isinstance(w, RadioButton):
            for b in self.radios:
                b.checked = b is w
        else:
            super().on_activate(w, count)

    def correct(self) -> bool:
        return self.target.checked

    def expert(self) -> list[Action]:
        if not self.target.checked:
            t = self.target
            return self.click(t, r=Rect(t.rect.x, t.rect.y, min(t.rect.w, 60), t.rect.h))
        return self.click(self.commit)

    def target_word(self) -> str | None:
        return self.named(self.target.label if not self.target.checked else self.commit.label)


class ToggleSwitch(_Commit):
    """Turn the named switch on or off (leaving the others), then press Apply."""

    name = "toggle-switch"

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(("Settings", "Preferences", "Quick Settings", "Connections")),
                              r.uniform(320, 440), r.uniform(260, 340))
        labels = r.sample(SWITCHES, r.randint(3, 5))
        self.switches: list[Switch] = []
        for i, lab in enumerate(labels):
            y = area.y + 34 * i
            if y + 28 > area.bottom - 36:
                break
            sw = Switch(Rect(area.x, y, min(area.w, 260), 28), name=lab, label=lab, on=r.random() < 0.5)
            self.switches.append(sw)
            self.widgets.append(sw)
        self.start = {s.label: s.on for s in self.switches}
        self.target = r.choice(self.switches)
        self.want = not self.target.on
        self.commit = self.add_button(area.right - 90, area.bottom - 28, "Apply", "primary")
        on = "on" if self.want else "off"
        en = "Enable" if self.want else "Disable"
        self.instruction = self.phrase(
            'Turn {on} "{s}", then click Apply.',
            "Switch {s} {on} and press Apply.",
            "{en} {s}, then click Apply.",
            on=on, s=self.target.label, en=en)

    def on_activate(self, w: Widget, count: int) -> None:
        if isinstance(w, Switch):
            w.on = not w.on
        else:
            super().on_activate(w, count)

    def correct(self) -> bool:
        return all(s.on == (self.want if s is self.target else self.start[s.label]) for s in self.switches)

    def expert(self) -> list[Action]:
        for s in self.switches:
            want = self.want if s is self.target else self.start[s.label]
            if s.on != want:
                return self.click(s, r=s.knob_area)
        return self.click(self.commit)

    def target_word(self) -> str | None:
        return None if self.target.on != self.want else self.named("Apply")


class SpinBox(_Commit):
    """Set a spin box to a value with its arrows (or by typing), then press OK."""

    name = "spin-box"

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(("Print", "Page Setup", "Options", "Order", "Settings")), r.uniform(320, 460),
                              r.uniform(180, 240))
        self.what = r.choice(SPIN)
        self.lo, self.hi = 0, 99
        self.widgets.append(Label(Rect(area.x, area.y, 90, 28), text=f"{self.what}:"))
        v0 = r.randint(1, 40)
        self.goal = min(self.hi, max(self.lo, v0 + r.choice((-1, 1)) * r.randint(1, 6)))
        self.field = TextField(Rect(area.x + 100, area.y, 70, 28), name=self.what, text=str(v0))
        self.widgets.append(self.field)
        fx = self.field.rect.right + 2
        self.up = ArrowButton(Rect(fx, area.y, 20, 14), name="up", direction="up")
        self.down = ArrowButton(Rect(fx, area.y + 14, 20, 14), name="down", direction="down")
        self.widgets += [self.up, self.down]
        self.commit = self.add_button(area.right - 90, area.bottom - 28, "OK", "primary")
        self.instruction = self.phrase(
            'Set "{w}" to {g} with the arrows, then click OK.',
            "Change {w} to {g} and press OK.",
            "Make the {w} value {g}, then click OK.",
            w=self.what, g=str(self.goal))

    def value(self) -> int | None:
        try:
            return int(self.field.text)
        except ValueError:
            return None

    def on_activate(self, w: Widget, count: int) -> None:
        if w in (self.up, self.down):
            v = self.value() or 0
            v = min(self.hi, max(self.lo, v + (1 if w is self.up else -1)))
            self.field.text = str(v)
            self.field.selected = False
        else:
            super().on_activate(w, count)

    def on_key(self, combo: str) -> bool:
        if self.focus is self.field and combo in ("up", "down"):
            self.on_activate(self.up if combo == "up" else self.down, 1)
            return True
        return False

    def correct(self) -> bool:
        return self.value() == self.goal

    def expert(self) -> list[Action]:
        v = self.value()
        if v is None:
            return self.fill(self.field, str(self.goal))
        if v != self.goal:
            return self.click(self.up if v < self.goal else self.down)
        return self.click(self.commit)

    def target_word(self) -> str | None:
        return self.named("OK") if self.value() == self.goal else None


class FillForm(_Commit):
    """Fill several named fields with the given values (names, places, e-mail addresses, numbers:
    what each field asks for, 2 to ~30 characters), then press Submit."""

    name = "fill-form"
    time_limit = 30.0

    def build(self) -> None:
        r = self.rng
        n = r.randint(2, 4)
        _, area = self.window(r.choice(("Sign Up", "New Contact", "Registration", "Profile", "Account")),
                              r.uniform(400, 560), 110 + 44 * n)
        names = r.sample(FIELD_NAMES, n)
        self.fields = self.field_rows(area, names, min(240.0, area.w - 110), area.bottom - 36)
        self.values = {f.name: field_text(r, f.name) for f in self.fields}
        self.commit = self.add_button(area.right - 96, area.bottom - 28, "Submit", "primary")
        pairs = list(self.values.items())
        self.instruction = self.phrase(
            "Fill in " + ", ".join(f'{k} "{v}"' for k, v in pairs) + ", then click Submit.",
            "Enter " + " and ".join(f'"{v}" as {k}' for k, v in pairs) + ", then press Submit.",
            "Complete the form (" + "; ".join(f"{k}: {v}" for k, v in pairs) + ") and click Submit.")

    def correct(self) -> bool:
        return all(f.text == self.values[f.name] for f in self.fields)

    def expert(self) -> list[Action]:
        for f in self.fields:
            acts = self.fill(f, self.values[f.name])
            if acts:
                return acts
        return self.click(self.commit)

    def target_word(self) -> str | None:
        for f in self.fields:
            if f.text != self.values[f.name]:
                return self.named(f.name) if not f.focused else None
        return self.named("Submit")


class TypeField(Task):
    """Type a value into the named field of a partly filled form and press Enter. The value is
    mostly what the field asks for (:func:`~agent.desktops.virtual.base.field_text`: 2 to ~30
    characters), sometimes another field's kind or any text of 2 to 32 characters; the field may hold
    a wrong value first, to be replaced (another value, or the right one run together with another:
    a slip typed into the wrong field)."""

    name = "type-field"

    def build(self) -> None:
        r = self.rng
        n = r.randint(2, 5)
        _, area = self.window(r.choice(("New Contact", "Profile", "Shipping", "Sign Up", "Details", "Account")),
                              r.uniform(420, 580), 60 + 44 * n)
        self.fields = self.field_rows(area, r.sample(FIELD_NAMES, n), min(260.0, area.w - 110), area.bottom)
        for f in self.fields:
            if r.random() < 0.4:  # filled in earlier
                f.text = field_text(r, f.name)
        self.target = r.choice(self.fields)
        # mostly what the field asks for; else what another field would hold, or text of any length,
        # so the field's name, not the look or length of the value, says where it goes
        kind = r.random()
        self.value = (field_text(r, self.target.name) if kind < 0.6 else
                      field_text(r, r.choice(FIELD_NAMES)) if kind < 0.8 else free_text(r))
        if self.target.text == self.value:
            self.target.text = ""
        if r.random() < 0.2:  # a slip made earlier: another value typed after (or before) the right one
            slip = field_text(r, r.choice(FIELD_NAMES))
            self.target.text = self.value + slip if r.random() < 0.7 else slip + self.value
        self.instruction = self.phrase(
            'Type "{v}" into the "{f}" field and press Enter.',
            'Enter "{v}" in the {f} field, then press Enter.',
            'In the "{f}" box, type "{v}" and hit Enter.',
            v=self.value, f=self.target.name)

    def on_key(self, combo: str) -> bool:
        if combo in ("enter", "return") and isinstance(self.focus, TextField):
            ok = self.focus is self.target and self.target.text == self.value
            self.end(ok, "success" if ok else "wrong text")
            return True
        return False

    def expert(self) -> list[Action]:
        f = self.target
        return self.fill(f, self.value) or (self.click(f) if not f.focused else [Key("enter")])

    def target_word(self) -> str | None:
        return self.named(self.target.name) if not self.target.focused else None


def near_word(r, word: str) -> str:
    """``word`` as a field might hold it by chance: itself (often lower case), or a letter changed,
    added or dropped ("summit" beside a Submit button)."""
    w = word.lower() if r.random() < 0.6 else word
    k = r.random()
    if k < 0.3 or len(w) < 3:
        return w
    i, c = r.randrange(1, len(w)), r.choice(string.ascii_lowercase)
    return w[:i] + c + w[i + 1:] if k < 0.65 else w[:i] + c + w[i:] if k < 0.85 else w[:i] + w[i + 1:]


class PressButton(ButtonChoice):
    """Click the named button of a filled form whose fields may hold the button's word, or one a
    letter off it (a City of "summit" beside Submit): the word alone does not say where the button
    is, its shape does. Another button fails."""

    name = "press-button"

    def build(self) -> None:
        r = self.rng
        n = r.randint(2, 4)
        _, area = self.window(r.choice(("New Contact", "Profile", "Details", "Account", "Order", "Settings")),
                              r.uniform(440, 600), 110 + 44 * n)
        self.fields = self.field_rows(area, r.sample(FIELD_NAMES, n), min(260.0, area.w - 110), area.bottom - 36)
        for f in self.fields:
            f.text = field_text(r, f.name) if r.random() < 0.8 else ""
        self.buttons = self.button_row(area.right, area.bottom - 28, r.sample(BUTTON_WORDS, r.randint(2, 3)))
        self.buttons[0].style = "primary"
        self.target = r.choice(self.buttons)
        for f in r.sample(self.fields, r.randint(0 if r.random() < 0.2 else 1, len(self.fields) - 1)):
            f.text = near_word(r, self.target.label)
        self.instruction = self.phrase('Click the "{b}" button.', "Press {b}.", 'Choose "{b}".', b=self.target.label)


class SwitchTab(Task):
    """Open the named tab of a notebook and click the named button on its page (a wrong button fails)."""

    name = "switch-tab"

    def build(self) -> None:
        r = self.rng
        win, area = self.window(r.choice(("Settings", "Properties", "Preferences", "System")), r.uniform(440, 620),
                                r.uniform(260, 340))
        names = r.sample(TABS, r.randint(3, 5))
        x = area.x
        self.tabs: list[Tab] = []
        for n in names:
            tw = round(self.text_width(n, bold=True) + 28)
            if x + tw > area.right:
                break
            t = Tab(Rect(x, area.y, tw, 28), name=n, label=n)
            self.tabs.append(t)
            self.widgets.append(t)
            x += tw + 2
        page = Rect(area.x, area.y + 27, area.w, area.h - 27)
        self.widgets.insert(self.widgets.index(self.tabs[0]), Panel(page, fill="content", outline="content_border"))
        words = r.sample(BUTTON_WORDS, 2 * len(self.tabs))
        self.pages: dict[str, list[Button]] = {}
        for i, t in enumerate(self.tabs):
            bs = []
            for j, label in enumerate(words[2 * i:2 * i + 2]):
                b = self.add_button(page.x + 20 + j * 130, page.y + 30 + r.uniform(0, 40), label)
                b.visible = False
                bs.append(b)
            self.pages[t.label] = bs
        start = r.choice(self.tabs)
        self.tab = r.choice([t for t in self.tabs if t is not start])
        self.select(start)
        self.target = r.choice(self.pages[self.tab.label])
        self.instruction = self.phrase(
            'Open the "{t}" tab and click "{b}".',
            "Go to the {t} tab and press {b}.",
            'In the {t} tab, click the "{b}" button.',
            t=self.tab.label, b=self.target.label)

    def select(self, tab: Tab) -> None:
        for t in self.tabs:
            t.active = t is tab
            for b in self.pages[t.label]:
                b.visible = t is tab

    def on_activate(self, w: Widget, count: int) -> None:
        if isinstance(w, Tab):
            self.select(w)
        elif isinstance(w, Button):
            self.end(w is self.target, "success" if w is self.target else "wrong button")

    def expert(self) -> list[Action]:
        if not self.tab.active:
            return self.click(self.tab)
        return self.click(self.target)

    def target_word(self) -> str | None:
        return self.named(self.target.label if self.tab.active else self.tab.label)


class DayCell(Button):
    """A day of a calendar month (flat; the chosen day filled with the accent)."""

    selected: bool = False

    def state_key(self) -> tuple:
        return (self.label, self.selected, self.hovered, self.pressed)

    def paint(self, p) -> None:
        r = self.rect
        if self.selected:
            p.rect(r.inset(1), fill="accent", radius=p.t.r(4))
        elif self.hovered:
            p.rect(r.inset(1), fill="button_hover", radius=p.t.r(4))
        p.text(r.center[0], r.center[1], self.label, 12.0, "on_accent" if self.selected else "text", "mm")


class PickDate(_Commit):
    """Go to the month of the named date with the calendar's arrows, click the day, press OK."""

    name = "pick-date"
    time_limit = 30.0

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(("Choose Date", "Calendar", "Due Date", "Schedule")), 360, 300)
        year = r.randint(2019, 2030)
        self.month = dt.date(year, r.randint(1, 12), 1)
        shift = r.randint(-2, 2)
        m = self.month.month - 1 + shift
        tm = dt.date(year + m // 12, m % 12 + 1, 1)
        self.goal = dt.date(tm.year, tm.month, r.randint(1, 28))
        self.chosen: dt.date | None = None
        cw = min(38.0, area.w / 7)
        ch = max(14.0, min(30.0, (area.h - 52) / 6))
        hw = min(7 * cw, area.w - 76)
        self.prev = ArrowButton(Rect(area.x, area.y, 26, 24), name="previous month", direction="left")
        self.next = ArrowButton(Rect(area.x + hw - 26, area.y, 26, 24), name="next month", direction="right")
        self.title = Label(Rect(area.x + 28, area.y, hw - 56, 24), anchor="mm", bold=True)
        self.widgets += [self.prev, self.next, self.title]
        for i, d in enumerate(("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")):
            self.widgets.append(Label(Rect(area.x + cw * i, area.y + 28, cw, 20), text=d, anchor="mm", size=11.0,
                                      color="text_dim"))
        self.cells: list[DayCell] = []
        for k in range(42):
            c = DayCell(Rect(round(area.x + cw * (k % 7)), round(area.y + 50 + ch * (k // 7)), round(cw), round(ch)),
                        name=f"day{k}")
            self.cells.append(c)
            self.widgets.append(c)
        self.commit = self.add_button(area.right - 70, area.y - 2, "OK", "primary", min_w=70)
        self.show()
        g = self.goal
        self.instruction = self.phrase(
            "Pick {M} {d}, {y} in the calendar, then click OK.",
            'Set the date to {d} {M} {y} and press OK.',
            'Choose "{iso}" and click OK.',
            M=MONTHS[g.month - 1], d=str(g.day), y=str(g.year), iso=g.isoformat())

    def show(self) -> None:
        m = self.month
        self.title.text = f"{MONTHS[m.month - 1]} {m.year}"
        first = m.weekday()
        nxt = dt.date(m.year + m.month // 12, m.month % 12 + 1, 1)
        days = (nxt - m).days
        for k, c in enumerate(self.cells):
            d = k - first + 1
            c.visible = 1 <= d <= days
            c.label = str(d)
            c.selected = c.visible and self.chosen == dt.date(m.year, m.month, d)

    def on_activate(self, w: Widget, count: int) -> None:
        if w in (self.prev, self.next):
            m = self.month.month - 1 + (1 if w is self.next else -1)
            self.month = dt.date(self.month.year + m // 12, m % 12 + 1, 1)
            self.show()
        elif isinstance(w, DayCell):
            self.chosen = dt.date(self.month.year, self.month.month, int(w.label))
            self.show()
        else:
            super().on_activate(w, count)

    def correct(self) -> bool:
        return self.chosen == self.goal

    def expert(self) -> list[Action]:
        if self.chosen != self.goal:
            if (self.month.year, self.month.month) != (self.goal.year, self.goal.month):
                later = (self.goal.year, self.goal.month) > (self.month.year, self.month.month)
                return self.click(self.next if later else self.prev)
            return self.click(next(c for c in self.cells if c.visible and c.label == str(self.goal.day)))
        return self.click(self.commit)

    def target_word(self) -> str | None:
        return self.named("OK") if self.chosen == self.goal else None


FORMS = (SelectDropdown, SelectRadio, ToggleSwitch, SpinBox, FillForm, TypeField, SwitchTab, PickDate, PressButton)
