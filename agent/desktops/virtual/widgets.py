"""Widgets of the virtual desktop and the scene that routes pointer and keyboard events to them.

Everything here is in logical points. A widget paints itself with a :class:`Painter` and
reports a ``state_key()`` (everything its picture depends on besides its bounds), from which
the canvas finds what to repaint. The :class:`Scene` is a tiny toolkit: hit-testing in z-order,
hover, pressed state between mouse-down and mouse-up, keyboard focus, slider capture, menus,
modal dialogs. Tasks subclass it and react to activations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.desktops.virtual.render import Color, Paint, Painter, Rect

WHITE: Color = (255, 255, 255)
FONT = 13.0  # body text, points
TITLE_H = 28.0  # window title bar, points
MAX_FIELD = 64  # characters a text field holds
ENTRY_TEXT_X = 14.0  # a menu entry's label starts this far right of the entry's left edge


@dataclass(eq=False)
class Widget:
    """Base widget: a rect in logical points, visibility, and the interaction flags the scene sets."""

    rect: Rect
    name: str = ""
    visible: bool = True
    group: str = "main"
    hovered: bool = False
    pressed: bool = False
    focused: bool = False

    interactive = False
    focusable = False
    draggable = False  # follows the pointer between press and release; dropped with on_drop

    def bounds(self) -> Rect:
        """What the widget may paint (its rect plus focus ring and shadow)."""
        return self.rect.outset(4)

    def state_key(self) -> tuple:
        return (self.hovered, self.pressed, self.focused)

    def contains(self, x: float, y: float) -> bool:
        return self.visible and self.rect.contains(x, y)

    def paint(self, p: Painter) -> None:  # pragma: no cover - every widget overrides
        raise NotImplementedError


@dataclass(eq=False)
class Panel(Widget):
    """A plain filled area (taskbar, menu bar, window body parts); blocks clicks beneath it."""

    fill: Paint = "window"
    outline: Paint | None = None

    def bounds(self) -> Rect:
        return self.rect

    def state_key(self) -> tuple:
        return (self.fill, self.outline)

    def paint(self, p: Painter) -> None:
        p.rect(self.rect, fill=self.fill, outline=self.outline)


@dataclass(eq=False)
class Window(Widget):
    """A top-level window: drop shadow, frame, title bar with its title."""

    title: str = ""
    active: bool = True

    def bounds(self) -> Rect:
        return Rect(self.rect.x - 2, self.rect.y - 2, self.rect.w + 8, self.rect.h + 8)

    def state_key(self) -> tuple:
        return (self.title, self.active)

    def paint(self, p: Painter) -> None:
        r, t = self.rect, p.t
        bar_fill = "titlebar" if self.active else "titlebar_inactive"
        if t.shadow:
            p.rect(Rect(r.x + 3, r.y + 4, r.w, r.h), fill=t.shadow, radius=t.r(6))  # shadow
        p.rect(r, fill="window", outline="border", radius=t.r(6))
        if t.bevel:
            p.bevel(r)
            bar = Rect(r.x + 3, r.y + 3, r.w - 6, TITLE_H - 2)
            p.rect(bar, fill=bar_fill)
            p.bevel(bar)
        else:
            bar = Rect(r.x + 1, r.y + 1, r.w - 2, TITLE_H)
            p.rect(bar, fill=bar_fill, radius=t.r(5))
            p.rect(Rect(r.x + 1, r.y + TITLE_H - 6, r.w - 2, 6), fill=bar_fill)
            p.line([(r.x + 1, r.y + TITLE_H + 1), (r.right - 2, r.y + TITLE_H + 1)], "border")
        color = "title_text" if self.active else "title_text_inactive"
        if t.title_align == "m":
            p.text(r.center[0], r.y + 1 + TITLE_H / 2, self.title, FONT, color, "mm", bold=t.title_bold)
        else:
            p.text(r.x + 12, r.y + 1 + TITLE_H / 2, self.title, FONT, color, bold=t.title_bold)


@dataclass(eq=False)
class Label(Widget):
    """Static text."""

    text: str = ""
    size: float = FONT
    color: Paint = "text"
    anchor: str = "lm"
    bold: bool = False

    def state_key(self) -> tuple:
        return (self.text, self.color)

    def paint(self, p: Painter) -> None:
        r = self.rect
        x = r.x if self.anchor[0] == "l" else r.center[0]
        p.text(x, r.center[1], self.text, self.size, self.color, self.anchor, bold=self.bold)


@dataclass(eq=False)
class Button(Widget):
    """A push button; ``style`` is "normal", "primary", or "close" (the × of a title bar)."""

    label: str = ""
    style: str = "normal"
    interactive = True

    def state_key(self) -> tuple:
        return (self.label, self.style, self.hovered, self.pressed, self.focused)

    def paint(self, p: Painter) -> None:
        r, t = self.rect, p.t
        if self.style == "close":
            if self.pressed or self.hovered:
                p.rect(r, fill="danger_pressed" if self.pressed else "danger", radius=t.r(4))
            elif t.bevel:
                p.bevel(r)
            color = WHITE if (self.pressed or self.hovered) else "title_text"
            cx, cy = r.center
            d = min(r.w, r.h) * 0.22
            p.line([(cx - d, cy - d), (cx + d, cy + d)], color, 1.6)
            p.line([(cx - d, cy + d), (cx + d, cy - d)], color, 1.6)
            return
        if self.style == "primary":
            fill = "accent_pressed" if self.pressed else ("accent_hover" if self.hovered else "accent")
            fg = "on_accent"
        else:
            fill = "button_pressed" if self.pressed else ("button_hover" if self.hovered else "button")
            fg = "button_text"
        if t.bevel:
            p.rect(r, fill=fill)
            p.bevel(r, raised=not self.pressed)
            if self.focused:
                p.rect(r.outset(2), outline="focus", width=1)
        else:
            p.rect(r, fill=fill, outline="accent" if self.hovered else "control_border", radius=t.r(5))
            if self.focused:
                p.rect(r.outset(2), outline="focus", width=2, radius=t.r(6))
        dy = 1 if self.pressed else 0
        p.text(r.center[0], r.center[1] + dy, self.label, FONT, fg, "mm")


@dataclass(eq=False)
class Checkbox(Widget):
    """A check box with its label to the right; clicking the box or the label toggles it."""

    label: str = ""
    checked: bool = False
    interactive = True

    BOX = 16.0

    def state_key(self) -> tuple:
        return (self.label, self.checked, self.hovered, self.pressed)

    def paint(self, p: Painter) -> None:
        r, t = self.rect, p.t
        b = Rect(r.x, r.center[1] - self.BOX / 2, self.BOX, self.BOX)
        if t.bevel:
            p.rect(b, fill="button_pressed" if self.pressed else "field")
            p.bevel(b, raised=False)
            if self.checked:
                p.rect(b.inset(4), fill="accent")
        elif self.checked:
            p.rect(b, fill="accent", outline="accent", radius=t.r(3))
            p.line([(b.x + 3.5, b.y + 8.5), (b.x + 6.5, b.y + 11.5), (b.x + 12.5, b.y + 4.5)], "on_accent", 2.0)
        else:
            fill = "button_pressed" if self.pressed else "field"
            p.rect(b, fill=fill, outline="accent" if self.hovered else "control_border", width=1.2, radius=t.r(3))
        p.text(b.right + 8, r.center[1], self.label, FONT, "text")


@dataclass(eq=False)
class TextField(Widget):
    """A single-line text field: white box, focus ring and caret when focused."""

    text: str = ""
    placeholder: str = ""
    selected: bool = False  # ctrl+a selected the whole text, if any (typing replaces it)
    readonly: bool = False
    interactive = True
    focusable = True

    def state_key(self) -> tuple:
        return (self.text, self.hovered, self.focused, self.selected)

    def paint(self, p: Painter) -> None:
        r, t = self.rect, p.t
        if t.bevel:
            p.rect(r, fill="field")
            p.bevel(r, raised=False)
            if self.focused:
                p.rect(r.outset(2), outline="focus", width=1)
        else:
            if self.focused:
                p.rect(r.outset(3), outline="accent_light", width=3, radius=t.r(6))
            p.rect(r, fill="field", outline="focus" if self.focused else ("accent" if self.hovered else "control_border"),
                   radius=t.r(4))
        x = r.x + 8
        if self.selected and self.text:
            p.rect(Rect(x - 1, r.y + 5, p.text_width(self.text, FONT) + 2, r.h - 10), fill="selection")
            p.text(x, r.center[1], self.text, FONT, "selection_text")
        elif self.text:
            p.text(x, r.center[1], self.text, FONT, "text")
        elif self.placeholder and not self.focused:
            p.text(x, r.center[1], self.placeholder, FONT, "placeholder")
        if self.focused and not (self.selected and self.text):
            cx = x + p.text_width(self.text, FONT) + 1
            p.line([(cx, r.y + 6), (cx, r.bottom - 6)], "text", 1.2)


@dataclass(eq=False)
class Slider(Widget):
    """A horizontal slider over integers ``lo..hi``; its current value is printed to the right."""

    lo: int = 0
    hi: int = 100
    value: int = 0
    interactive = True
    focusable = True

    VALUE_W = 48.0
    THUMB = 18.0

    @property
    def track(self) -> Rect:
        """The span the thumb's centre travels (logical points)."""
        r = self.rect
        pad = self.THUMB / 2
        return Rect(r.x + pad, r.y, r.w - self.VALUE_W - 2 * pad, r.h)

    def value_at(self, x: float) -> int:
        t = self.track
        f = min(1.0, max(0.0, (x - t.x) / t.w))
        return int(round(self.lo + f * (self.hi - self.lo)))

    def x_of(self, value: int) -> float:
        t = self.track
        return t.x + (value - self.lo) / (self.hi - self.lo) * t.w

    def state_key(self) -> tuple:
        return (self.value, self.hovered, self.pressed, self.focused)

    def paint(self, p: Painter) -> None:
        t = self.track
        cy = self.rect.center[1]
        tx = self.x_of(self.value)
        th = Rect(tx - self.THUMB / 2, cy - self.THUMB / 2, self.THUMB, self.THUMB)
        if p.t.bevel:
            trough = Rect(t.x - self.THUMB / 2, cy - 6, t.w + self.THUMB, 12)
            p.rect(trough, fill="track")
            p.bevel(trough, raised=False, width=1)
            if self.focused:
                p.rect(trough.outset(2), outline="focus", width=1)
            knob = Rect(th.x, cy - 9, self.THUMB, 18)
            p.rect(knob, fill="button_pressed" if self.pressed else "thumb")
            p.bevel(knob)
        else:
            p.rect(Rect(t.x, cy - 2, t.w, 4), fill="track", radius=p.t.r(2))
            p.rect(Rect(t.x, cy - 2, tx - t.x, 4), fill="accent")
            if self.focused:
                p.ellipse(th.outset(3), fill="accent_light")
            p.ellipse(th, fill="button_pressed" if self.pressed else "thumb",
                      outline="accent" if self.hovered else "control_border", width=1.5)
        p.text(self.rect.right - self.VALUE_W + 10, cy, str(self.value), FONT, "text")


@dataclass(eq=False)
class MenuTitle(Widget):
    """A title in a menu bar; pressing it opens or closes its drop-down."""

    label: str = ""
    open: bool = False
    items: list[MenuItem] = field(default_factory=list)
    popup: Panel | None = None
    interactive = True

    def state_key(self) -> tuple:
        return (self.label, self.open, self.hovered)

    def bounds(self) -> Rect:
        return self.rect

    def paint(self, p: Painter) -> None:
        if p.t.bevel:
            if self.open:
                p.bevel(self.rect)
            p.text(self.rect.center[0], self.rect.center[1], self.label, FONT, "text", "mm")
            return
        if self.open:
            p.rect(self.rect, fill="menu_hover")
        elif self.hovered:
            p.rect(self.rect, fill="button_hover")
        p.text(self.rect.center[0], self.rect.center[1], self.label, FONT, "menu_hover_text" if self.open else "text",
               "mm")


@dataclass(eq=False)
class MenuItem(Widget):
    """One entry of a drop-down menu."""

    label: str = ""
    menu: str = ""
    interactive = True

    def bounds(self) -> Rect:
        return self.rect

    def state_key(self) -> tuple:
        return (self.label, self.hovered)

    def paint(self, p: Painter) -> None:
        if self.hovered:
            if p.t.bevel:
                p.rect(self.rect.inset(2), fill="menu_hover")
                p.bevel(self.rect.inset(2))
            else:
                p.rect(self.rect.inset(2), fill="menu_hover", radius=p.t.r(3))
        p.text(self.rect.x + ENTRY_TEXT_X, self.rect.center[1], self.label, FONT, "menu_hover_text" if self.hovered else "text")


@dataclass(eq=False)
class Icon(Widget):
    """A desktop icon (folder or document glyph with a caption); selected by a click, opened by a double-click."""

    label: str = ""
    color: Color = (236, 184, 64)
    kind: str = "folder"
    selected: bool = False
    interactive = True

    GLYPH = 44.0

    def state_key(self) -> tuple:
        return (self.label, self.selected, self.hovered)

    def paint(self, p: Painter) -> None:
        r = self.rect
        if self.selected:
            p.rect(r, fill="icon_selected", outline="icon_selected_border", radius=p.t.r(4))
        elif self.hovered:
            p.rect(r, fill="icon_hover", radius=p.t.r(4))
        g = self.GLYPH
        gx, gy = r.center[0] - g / 2, r.y + 6
        if self.kind == "folder":
            p.rect(Rect(gx, gy + 4, g * 0.45, 8), fill=self.color, radius=2)
            p.rect(Rect(gx, gy + 8, g, g * 0.72), fill=self.color, outline=(90, 70, 30), radius=3)
        else:
            fold = g * 0.25
            x0, x1 = gx + g * 0.15, gx + g * 0.85
            pts = [(x0, gy), (x1 - fold, gy), (x1, gy + fold), (x1, gy + g), (x0, gy + g)]
            p.polygon(pts, fill=WHITE, outline=(90, 90, 96))
            p.rect(Rect(x0 + 5, gy + g * 0.45, (x1 - x0) - 10, 4), fill=self.color)
            p.rect(Rect(x0 + 5, gy + g * 0.62, (x1 - x0) - 14, 4), fill=self.color)
        # caption: white text on a dark plate so it stays legible on any wallpaper
        tw = p.text_width(self.label, 12.0)
        cy = r.bottom - 11
        p.rect(Rect(r.center[0] - tw / 2 - 4, cy - 8, tw + 8, 16), fill="caption", radius=p.t.r(3))
        p.text(r.center[0], cy, self.label, 12.0, "caption_text", "mm")


class Scene:
    """The widgets of one task and the toolkit logic that routes input to them.

    Subclasses (tasks) build ``self.widgets`` (z-order: first is bottom-most) and override
    :meth:`on_activate` and :meth:`on_key`. Pointer positions are logical points.
    """

    def __init__(self) -> None:
        self.widgets: list[Widget] = []
        self.cursor: tuple[float, float] = (0.0, 0.0)
        self.hovered: Widget | None = None
        self.pressed: Widget | None = None
        self.focus: Widget | None = None
        self.capture: Slider | None = None
        self.open_menu: MenuTitle | None = None
        self.modal: str | None = None  # when set, only widgets of this group take input
        self.dragging: Widget | None = None  # a widget with ``draggable`` being dragged
        self._drag_from: tuple[float, float, Rect] | None = None
        self.clipboard = ""

    # -- queries -----------------------------------------------------------------------------
    def hit(self, x: float, y: float) -> Widget | None:
        """The top-most visible widget under the point (interactive or not), honouring modality."""
        for w in reversed(self.widgets):
            if w.contains(x, y):
                if self.modal is not None and w.group != self.modal:
                    return None
                return w
        return None

    def interactive_at(self, x: float, y: float) -> Widget | None:
        w = self.hit(x, y)
        return w if w is not None and w.interactive else None

    # -- state changes -------------------------------------------------------------------------
    def set_focus(self, w: Widget | None) -> None:
        if self.focus is not None:
            self.focus.focused = False
        self.focus = w if (w is not None and w.focusable) else None
        if self.focus is not None:
            self.focus.focused = True

    def set_menu(self, title: MenuTitle | None) -> None:
        if self.open_menu is not None:
            self.open_menu.open = False
            for it in self.open_menu.items:
                it.visible = False
                it.hovered = False
            if self.open_menu.popup is not None:
                self.open_menu.popup.visible = False
        self.open_menu = title
        if title is not None:
            title.open = True
            for it in title.items:
                it.visible = True
            if title.popup is not None:
                title.popup.visible = True

    def _update_hover(self) -> None:
        w = self.interactive_at(*self.cursor)
        if w is not self.hovered:
            if self.hovered is not None:
                self.hovered.hovered = False
            self.hovered = w
            if w is not None:
                w.hovered = True

    # -- events (called by the desktop) --------------------------------------------------------
    def pointer_move(self, x: float, y: float) -> None:
        self.cursor = (x, y)
        if self.dragging is not None and self._drag_from is not None:
            x0, y0, r0 = self._drag_from
            self.dragging.rect = Rect(r0.x + x - x0, r0.y + y - y0, r0.w, r0.h)
        if self.capture is not None:
            self.capture.value = self.capture.value_at(x)
            self.on_change(self.capture)
        if self.pressed is not None:
            self.pressed.pressed = self.pressed.contains(x, y) and self.capture is None
        self._update_hover()
        w = self.hovered
        if self.open_menu is not None and isinstance(w, MenuTitle) and w is not self.open_menu:
            self.set_menu(w)

    def pointer_down(self, x: float, y: float, button: str, count: int) -> None:
        self.pointer_move(x, y)
        if button != "left":
            if self.open_menu is not None:
                self.set_menu(None)
            elif button == "right":
                self.on_context(self.interactive_at(x, y), x, y)
            return
        w = self.interactive_at(x, y)
        if self.open_menu is not None:
            inside = isinstance(w, MenuItem) and w in self.open_menu.items
            if isinstance(w, MenuTitle):
                self.set_menu(None if w is self.open_menu else w)
                return
            if not inside:
                self.set_menu(None)  # a click outside an open menu only closes it
                return
        self.set_focus(w if w is not None and w.focusable else None)
        if w is None:
            self.on_background_click(x, y, count)
            return
        if isinstance(w, MenuTitle):
            self.set_menu(w)
            return
        self.pressed = w
        w.pressed = True
        if w.draggable:
            self.dragging = w
            self._drag_from = (x, y, w.rect)
        if isinstance(w, Slider):
            self.capture = w
            w.pressed = True
            w.value = w.value_at(x)
            self.on_change(w)
        if isinstance(w, Icon):
            for other in self.widgets:
                if isinstance(other, Icon):
                    other.selected = other is w
            if count >= 2:
                self.on_activate(w, count)

    def pointer_up(self, x: float, y: float, button: str) -> None:
        self.pointer_move(x, y)
        if button != "left":
            return
        w, self.pressed = self.pressed, None
        if self.capture is not None:
            self.capture.pressed = False
            self.capture = None
            if w is not None:
                w.pressed = False
            return
        if w is None:
            return
        w.pressed = False
        if self.dragging is w:
            self.dragging, self._drag_from = None, None
            self.on_drop(w, x, y)
            return
        if isinstance(w, Icon):
            return
        if self.interactive_at(x, y) is w:
            if isinstance(w, Checkbox):
                w.checked = not w.checked
            self.on_activate(w, 1)

    def key(self, combo: str) -> None:
        if self.on_key(combo):
            return
        f = self.focus
        if combo == "escape":
            if self.open_menu is not None:
                self.set_menu(None)
            else:
                self.set_focus(None)
        elif combo in ("tab", "shift+tab"):
            order = [w for w in self.widgets if w.visible and w.focusable and (self.modal in (None, w.group))]
            if order:
                i = order.index(f) if f in order else -1
                i = (i + (-1 if combo == "shift+tab" else 1)) % len(order)
                self.set_focus(order[i])
        elif isinstance(f, TextField):
            if combo == "ctrl+a":  # all of it, even nothing: what is typed next replaces it
                f.selected = True
                return
            if combo == "ctrl+c":
                self.clipboard = f.text
                return
            if combo == "ctrl+v":
                self.type_text(self.clipboard)
                return
            if f.readonly:
                return
            if combo == "backspace":
                f.text = "" if f.selected else f.text[:-1]
            elif combo in ("ctrl+backspace", "ctrl+u"):
                f.text = ""
            f.selected = False
            self.on_change(f)
        elif isinstance(f, Slider):
            step = {"left": -1, "down": -1, "right": 1, "up": 1, "pageup": 10, "pagedown": -10}.get(combo, 0)
            if combo == "home":
                f.value = f.lo
            elif combo == "end":
                f.value = f.hi
            else:
                f.value = min(f.hi, max(f.lo, f.value + step))
            self.on_change(f)

    def type_text(self, text: str) -> None:
        for ch in text:
            if ch == "\n":
                self.key("enter")
            elif ch == "\t":
                self.key("tab")
            elif isinstance(self.focus, TextField) and not self.focus.readonly:
                f = self.focus
                if f.selected:
                    f.text, f.selected = "", False
                if len(f.text) < MAX_FIELD:
                    f.text += ch
                    self.on_change(f)

    # -- hooks for tasks -----------------------------------------------------------------------
    def on_activate(self, w: Widget, count: int) -> None:
        """A button, check box, menu item was clicked (mouse-up over it), or an icon double-clicked."""

    def on_key(self, combo: str) -> bool:
        """A key combo; return True when the task consumed it."""
        return False

    def on_change(self, w: Widget) -> None:
        """A field's text or a slider's value changed."""

    def on_background_click(self, x: float, y: float, count: int) -> None:
        """A press on nothing interactive."""

    def on_context(self, w: Widget | None, x: float, y: float) -> None:
        """A right-button press on ``w`` (None: nothing interactive), no menu being open."""

    def on_drop(self, w: Widget, x: float, y: float) -> None:
        """A draggable widget was released at ``(x, y)``."""

    def on_scroll(self, x: float, y: float, dx: int, dy: int) -> None:
        """The wheel turned ``dx, dy`` notches (positive ``dy``: content moves down) over ``(x, y)``."""

    def on_tick(self, t: float) -> None:
        """The clock moved to ``t`` (virtual seconds): timed events, animations."""
