"""More widgets for the virtual desktop's task families: radio buttons, switches, list and table
rows (also tree rows), tabs, a drop-down box, arrow buttons, a text area with word selection,
a loading spinner, taskbar buttons and draggable items.

Like :mod:`agent.desktops.virtual.widgets`, everything is in logical points and painted through
the theme (colours by name), so every family gets every look for free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from agent.desktops.virtual.render import Painter, Rect
from agent.desktops.virtual.widgets import FONT, Icon, Widget


@dataclass(eq=False)
class RadioButton(Widget):
    """One option of a radio group (the task keeps the group exclusive)."""

    label: str = ""
    checked: bool = False
    interactive = True

    DOT = 16.0

    def state_key(self) -> tuple:
        return (self.label, self.checked, self.hovered, self.pressed)

    def paint(self, p: Painter) -> None:
        r, t = self.rect, p.t
        b = Rect(r.x, r.center[1] - self.DOT / 2, self.DOT, self.DOT)
        if t.bevel:  # Motif's diamond
            cx, cy, d = b.center[0], b.center[1], self.DOT / 2
            pts = [(cx, cy - d), (cx + d, cy), (cx, cy + d), (cx - d, cy)]
            p.polygon(pts, fill="accent" if self.checked else "field", outline="dark_edge")
        else:
            p.ellipse(b, fill="button_pressed" if self.pressed else "field",
                      outline="accent" if (self.hovered or self.checked) else "control_border", width=1.2)
            if self.checked:
                p.ellipse(b.inset(4), fill="accent")
        p.text(b.right + 8, r.center[1], self.label, FONT, "text")


@dataclass(eq=False)
class Switch(Widget):
    """An on/off switch with its label to the left; the task flips it on activation."""

    label: str = ""
    on: bool = False
    interactive = True

    W = 40.0
    H = 20.0

    @property
    def knob_area(self) -> Rect:
        r = self.rect
        return Rect(r.right - self.W, r.center[1] - self.H / 2, self.W, self.H)

    def state_key(self) -> tuple:
        return (self.label, self.on, self.hovered)

    def paint(self, p: Painter) -> None:
        r, t = self.rect, p.t
        k = self.knob_area
        if t.bevel:
            p.rect(k, fill="accent" if self.on else "track")
            p.bevel(k, raised=False, width=1)
            knob = Rect(k.right - k.h if self.on else k.x, k.y, k.h, k.h)
            p.rect(knob, fill="thumb")
            p.bevel(knob)
        else:
            p.rect(k, fill="accent" if self.on else "track", outline="accent" if self.hovered else None,
                   radius=t.r(self.H / 2) if t.radius else 0)
            knob = Rect(k.right - k.h + 2 if self.on else k.x + 2, k.y + 2, k.h - 4, k.h - 4)
            if t.radius:
                p.ellipse(knob, fill="thumb")
            else:
                p.rect(knob, fill="thumb")
        p.text(r.x, r.center[1], self.label, FONT, "text")


@dataclass(eq=False)
class Row(Widget):
    """A row of a list, table or tree: cells at x offsets (points from the row's left), selectable.
    ``expander`` (trees): None for a leaf, else whether its children show; ``indent`` in points."""

    cells: list[str] = field(default_factory=list)
    columns: list[float] = field(default_factory=lambda: [8.0])
    selected: bool = False
    indent: float = 0.0
    expander: bool | None = None
    stripe: bool = False
    interactive = True

    def bounds(self) -> Rect:
        return self.rect

    def state_key(self) -> tuple:
        return (tuple(self.cells), self.selected, self.hovered, self.expander, self.stripe)

    @property
    def arrow(self) -> Rect:
        """The expander triangle's hit box (trees)."""
        r = self.rect
        return Rect(r.x + self.indent + 2, r.y, 18, r.h)

    def paint(self, p: Painter) -> None:
        r = self.rect
        if self.selected:
            p.rect(r, fill="selection")
        elif self.hovered:
            p.rect(r, fill="menu_hover" if not p.t.bevel else "button_hover")
        elif self.stripe:
            p.rect(r, fill="window")
        fg = "selection_text" if self.selected else ("menu_hover_text" if self.hovered and not p.t.bevel else "text")
        x0 = r.x + self.indent
        if self.expander is not None:
            a = self.arrow
            cx, cy = a.center
            if self.expander:
                p.polygon([(cx - 4, cy - 2), (cx + 4, cy - 2), (cx, cy + 3)], fill=fg)
            else:
                p.polygon([(cx - 2, cy - 4), (cx + 3, cy), (cx - 2, cy + 4)], fill=fg)
        for text, cx in zip(self.cells, self.columns, strict=False):
            p.text(x0 + cx, r.center[1], text, FONT, fg)


@dataclass(eq=False)
class Tab(Widget):
    """A notebook tab; the active one joins the page below it."""

    label: str = ""
    active: bool = False
    interactive = True

    def state_key(self) -> tuple:
        return (self.label, self.active, self.hovered)

    def bounds(self) -> Rect:
        return self.rect.outset(1)

    def paint(self, p: Painter) -> None:
        r, t = self.rect, p.t
        fill = "content" if self.active else ("button_hover" if self.hovered else "button")
        if t.bevel:
            rr = r if self.active else Rect(r.x, r.y + 3, r.w, r.h - 3)
            p.rect(rr, fill=fill)
            p.bevel(rr)
        else:
            p.rect(r, fill=fill, outline="content_border", radius=t.r(4))
            if self.active:
                p.rect(Rect(r.x + 1, r.bottom - 4, r.w - 2, 5), fill="content")
                p.rect(Rect(r.x + 1, r.y, r.w - 2, 3), fill="accent")
        p.text(r.center[0], r.center[1] + 1, self.label, FONT, "text", "mm", bold=self.active)


@dataclass(eq=False)
class DropDown(Widget):
    """A closed combo box: the chosen value (or a prompt) and a down arrow; opens a popup list."""

    value: str = ""
    prompt: str = "Select..."
    open: bool = False
    interactive = True

    def state_key(self) -> tuple:
        return (self.value, self.open, self.hovered)

    def paint(self, p: Painter) -> None:
        r, t = self.rect, p.t
        if t.bevel:
            p.rect(r, fill="button")
            p.bevel(r)
        else:
            p.rect(r, fill="field", outline="accent" if (self.hovered or self.open) else "control_border",
                   radius=t.r(4))
        p.text(r.x + 8, r.center[1], self.value or self.prompt, FONT, "text" if self.value else "placeholder")
        cx, cy = r.right - 14, r.center[1]
        p.polygon([(cx - 5, cy - 2), (cx + 5, cy - 2), (cx, cy + 4)], fill="text")


@dataclass(eq=False)
class ArrowButton(Widget):
    """A small button with a triangle: ``direction`` "up", "down", "left" or "right"."""

    direction: str = "up"
    interactive = True

    def state_key(self) -> tuple:
        return (self.direction, self.hovered, self.pressed)

    def paint(self, p: Painter) -> None:
        r, t = self.rect, p.t
        fill = "button_pressed" if self.pressed else ("button_hover" if self.hovered else "button")
        if t.bevel:
            p.rect(r, fill=fill)
            p.bevel(r, raised=not self.pressed, width=1)
        else:
            p.rect(r, fill=fill, outline="control_border", radius=t.r(2))
        cx, cy = r.center
        d = min(r.w, r.h) * 0.22
        pts = {"up": [(cx - d, cy + d / 2), (cx + d, cy + d / 2), (cx, cy - d / 2)],
               "down": [(cx - d, cy - d / 2), (cx + d, cy - d / 2), (cx, cy + d / 2)],
               "left": [(cx + d / 2, cy - d), (cx + d / 2, cy + d), (cx - d / 2, cy)],
               "right": [(cx - d / 2, cy - d), (cx - d / 2, cy + d), (cx + d / 2, cy)]}[self.direction]
        p.polygon(pts, fill="button_text")


@dataclass(eq=False)
class TextArea(Widget):
    """Read-write text of one or more lines of words. A double click selects a word; typing
    replaces the selection. ``words`` is the text as words; lines wrap at the area's width."""

    words: list[str] = field(default_factory=list)
    sel: int | None = None  # index of the selected word
    focusable = True
    interactive = True
    measure: object = None  # (text, size) -> width in points: the look's, set by the task

    LINE = 22.0

    def state_key(self) -> tuple:
        return (tuple(self.words), self.sel, self.focused, self.hovered)

    def layout(self) -> list[Rect]:
        """Each word's box, wrapped to the area (points)."""
        r = self.rect
        space = max(4.0, self.measure("a b", FONT) - self.measure("ab", FONT))
        x, y = r.x + 8, r.y + 6
        out = []
        for w in self.words:
            ww = self.measure(w, FONT)
            if x + ww > r.right - 8 and x > r.x + 8:
                x, y = r.x + 8, y + self.LINE
            out.append(Rect(x, y, ww, self.LINE))
            x += ww + space
        return out

    def word_at(self, x: float, y: float) -> int | None:
        for i, b in enumerate(self.layout()):
            if b.outset(1).contains(x, y):
                return i
        return None

    def paint(self, p: Painter) -> None:
        r, t = self.rect, p.t
        if t.bevel:
            p.rect(r, fill="field")
            p.bevel(r, raised=False)
        else:
            p.rect(r, fill="field", outline="focus" if self.focused else "control_border", radius=t.r(3))
        for i, (w, b) in enumerate(zip(self.words, self.layout(), strict=True)):
            if i == self.sel:
                p.rect(Rect(b.x - 1, b.y + 2, b.w + 2, b.h - 4), fill="selection")
            p.text(b.x, b.center[1], w, FONT, "selection_text" if i == self.sel else "text")


@dataclass(eq=False)
class Spinner(Widget):
    """A loading spinner: eight dots, one highlighted, turning with the clock (``phase``)."""

    phase: int = 0
    label: str = "Loading..."

    def state_key(self) -> tuple:
        return (self.phase, self.label)

    def paint(self, p: Painter) -> None:
        r = self.rect
        cx, cy, rad = r.x + 14, r.center[1], 10.0
        for i in range(8):
            a = 2 * math.pi * i / 8
            x, y = cx + rad * math.cos(a), cy + rad * math.sin(a)
            p.ellipse(Rect(x - 2.5, y - 2.5, 5, 5), fill="accent" if i == self.phase % 8 else "track")
        p.text(r.x + 32, cy, self.label, FONT, "text_dim")


@dataclass(eq=False)
class TaskbarButton(Widget):
    """A window's button on the taskbar; the active window's is lit."""

    label: str = ""
    active: bool = False
    interactive = True

    def state_key(self) -> tuple:
        return (self.label, self.active, self.hovered)

    def paint(self, p: Painter) -> None:
        r = self.rect
        if p.t.bevel:
            p.rect(r, fill="button_pressed" if self.active else "button")
            p.bevel(r, raised=not self.active, width=1)
            fg = "text"
        else:
            if self.active or self.hovered:
                p.rect(r, fill="icon_selected" if self.active else "icon_hover", radius=p.t.r(3))
            p.rect(Rect(r.x + 4, r.bottom - 3, r.w - 8, 2), fill="taskbar_button")
            fg = "taskbar_text"
        p.text(r.x + 10, r.center[1], self.label, FONT, fg)


@dataclass(eq=False)
class DragIcon(Icon):
    """A desktop icon that follows the pointer while the button is held (drag and drop)."""

    draggable = True


__all__ = ["ArrowButton", "DragIcon", "DropDown", "RadioButton", "Row", "Spinner", "Switch", "Tab", "TaskbarButton",
           "TextArea"]
