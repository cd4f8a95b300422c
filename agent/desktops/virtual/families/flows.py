"""Work that spans steps and windows: replace a word, copy and paste between windows, a keyboard
shortcut, a confirm dialog, a pop-up that interrupts, a window behind another, a loading delay, and
an instruction whose target is not on the screen."""

from __future__ import annotations

import random
import string

from agent.desktops.virtual.base import (
    ANY_WORDS,
    BUTTON_WORDS,
    PAD,
    TASKBAR_H,
    TEXT_WORDS,
    WINDOW_TITLES,
    Task,
)
from agent.desktops.virtual.controls import Row, Spinner, TaskbarButton, TextArea
from agent.desktops.virtual.families.lists import EXTS, FILES, ROW_H
from agent.desktops.virtual.render import Rect
from agent.desktops.virtual.widgets import TITLE_H, Button, Label, Panel, TextField, Widget, Window
from policies.actions import Action, Key, Type, Wait


class ReplaceWord(Task):
    """Double-click a word in a text to select it, type its replacement, press Save."""

    name = "replace-word"
    time_limit = 30.0

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(("Notes", "Editor", "Draft", "Memo")), r.uniform(380, 560), r.uniform(220, 300))
        pool = list(TEXT_WORDS + ANY_WORDS)
        r.shuffle(pool)
        n = r.randint(6, 12)
        words, self.new = pool[:n], pool[n]
        self.idx = r.randrange(n)
        self.old = words[self.idx]
        self.text = TextArea(Rect(area.x, area.y, area.w, area.h - 40), name="text", words=list(words),
                             measure=self.text_width)
        self.widgets.append(self.text)
        self.expected = [self.new if i == self.idx else w for i, w in enumerate(words)]
        self.edit: int | None = None  # the word being typed over
        self.commit = self.add_button(area.right - 90, area.bottom - 28, "Save", "primary")
        self.instruction = self.phrase(
            'Replace "{o}" with "{n}" in the text, then click Save.',
            "Change the word {o} to {n} and press Save.",
            'In the text, select "{o}", type "{n}", then click Save.',
            o=self.old, n=self.new)

    def pointer_down(self, x: float, y: float, button: str, count: int) -> None:
        super().pointer_down(x, y, button, count)
        if button == "left" and self.interactive_at(x, y) is self.text:
            i = self.text.word_at(x, y) if count >= 2 else None
            self.text.sel, self.edit = i, None

    def type_text(self, text: str) -> None:
        if self.focus is not self.text:
            return super().type_text(text)
        for ch in text:
            if ch in " \t\n":
                continue
            if self.text.sel is not None:
                self.edit, self.text.sel = self.text.sel, None
                self.text.words[self.edit] = ch
            elif self.edit is not None:
                self.text.words[self.edit] += ch
        self.text.words = list(self.text.words)  # a new list: the canvas sees the change

    def on_key(self, combo: str) -> bool:
        if self.focus is self.text and combo == "backspace":
            i = self.text.sel if self.text.sel is not None else self.edit
            if i is not None:
                self.text.words = [w[:-1] if j == i else w for j, w in enumerate(self.text.words)]
                self.edit, self.text.sel = i, None
            return True
        return False

    def on_activate(self, w: Widget, count: int) -> None:
        if w is self.commit:
            ok = self.text.words == self.expected
            self.end(ok, "success" if ok else "wrong text")

    def expert(self) -> list[Action]:
        cur = self.text.words[self.idx]
        if cur == self.new and self.text.sel is None:
            return self.click(self.commit)
        if self.text.sel == self.idx:
            return [Type(self.new)]
        if self.edit == self.idx and self.new.startswith(cur) and cur:
            return [Type(self.new[len(cur):])]
        box = self.text.layout()[self.idx]
        return self.click(self.text, count=2, r=box)

    def target_word(self) -> str | None:
        if self.text.words[self.idx] == self.new:
            return self.named("Save")
        return self.named(self.old) if self.text.sel != self.idx and self.edit != self.idx else None


PAIRS = (("Order number", "Reference"), ("Confirmation code", "Code"), ("License key", "Key"),
         ("Tracking ID", "Tracking"), ("Invoice number", "Invoice"), ("Voucher", "Voucher code"))


class CopyPaste(Task):
    """Copy a value from a field of one window (select all, copy) and paste it into another's, press OK."""

    name = "copy-paste"
    time_limit = 30.0

    def build(self) -> None:
        r = self.rng
        src_label, dst_label = r.choice(PAIRS)
        self.code = "".join(r.choice(string.ascii_uppercase) for _ in range(3)) + "-" + \
            "".join(r.choice(string.digits) for _ in range(4))
        src_title, dst_title = r.sample(("Orders", "Confirmation", "Mail", "Account", "Receipt", "Checkout", "Form",
                                         "Support"), 2)
        avail_w, avail_h = self.lw - 16, self.lh - TASKBAR_H - 16
        ww = min(320.0, (avail_w - 8) / 2)
        hh = min(170.0, avail_h)
        left = r.random() < 0.5
        xs = (8.0, 8 + avail_w - ww) if left else (8 + avail_w - ww, 8.0)
        ys = [8 + r.uniform(0, avail_h - hh) for _ in range(2)]
        areas = []
        for title, x, y in ((src_title, xs[0], ys[0]), (dst_title, xs[1], ys[1])):
            win = Window(Rect(round(x), round(y), round(ww), round(hh)), title=title)
            self.widgets.append(win)
            w = win.rect
            areas.append(Rect(w.x + PAD, w.y + TITLE_H + PAD, w.w - 2 * PAD, w.h - TITLE_H - 2 * PAD))
        a, b = areas
        self.widgets.append(Label(Rect(a.x, a.y, a.w, 20), text=f"{src_label}:"))
        self.src = TextField(Rect(a.x, a.y + 24, min(a.w, self.text_width(self.code) + 40), 28), name=src_label,
                             text=self.code, readonly=True)
        self.widgets.append(self.src)
        self.widgets.append(Label(Rect(b.x, b.y, b.w, 20), text=f"{dst_label}:"))
        self.dst = TextField(Rect(b.x, b.y + 24, min(b.w, 160.0), 28), name=dst_label)
        self.widgets.append(self.dst)
        self.commit = self.add_button(b.right - 80, b.bottom - 28, "OK", "primary", min_w=70)
        self.instruction = self.phrase(
            'Copy the {s} from "{sw}" into the {d} field, then click OK.',
            "Paste the {s} shown in {sw} into {d} and press OK.",
            'Transfer "{s}" to the "{d}" field of {dw} (copy and paste), then click OK.',
            s=src_label.lower() if r.random() < 0.5 else src_label, sw=src_title, d=dst_label, dw=dst_title)

    def on_activate(self, w: Widget, count: int) -> None:
        if w is self.commit:
            ok = self.dst.text == self.code
            self.end(ok, "success" if ok else "wrong text")

    def expert(self) -> list[Action]:
        if self.dst.text == self.code:
            return self.click(self.commit)
        if self.clipboard != self.code:
            if not self.src.focused:
                return self.click(self.src)
            return [Key("ctrl+c" if self.src.selected else "ctrl+a")]
        if not self.dst.focused:
            return self.click(self.dst)
        return [Key("ctrl+a" if self.dst.text and not self.dst.selected else "ctrl+v")]

    def target_word(self) -> str | None:
        if self.dst.text == self.code:
            return self.named("OK")
        if self.clipboard != self.code:
            return None
        return self.named(self.dst.name) if not self.dst.focused else None


SHORTCUTS = (
    ("Save the document", "save", "ctrl+s", "Saved."),
    ("Print the page", "print", "ctrl+p", "Printing..."),
    ("Undo the last change", "undo the last change", "ctrl+z", "Undone."),
    ("Open the find bar", "find text", "ctrl+f", "Find:"),
    ("Create a new document", "create a new document", "ctrl+n", "New document."),
    ("Make the text bold", "make the text bold", "ctrl+b", "Bold on."),
    ("Open a file", "open a file", "ctrl+o", "Open..."),
)


def _pretty(combo: str) -> str:
    return "+".join(k.capitalize() if len(k) > 1 else k.upper() for k in combo.split("+"))


class KeyboardShortcut(Task):
    """Press the named keyboard shortcut (another known shortcut fails)."""

    name = "keyboard-shortcut"

    def build(self) -> None:
        r = self.rng
        title = r.choice(("report.txt", "notes.md", "letter.odt", "Untitled"))
        win, _ = self.window(f"{title} - Editor", r.uniform(420, 620), r.uniform(260, 380))
        wr = win.rect
        self.widgets.append(Panel(Rect(wr.x + 1, wr.y + TITLE_H + 2, wr.w - 2, 24), fill="menubar"))
        x = wr.x + 10
        for m in ("File", "Edit", "View", "Help"):
            self.widgets.append(Label(Rect(x, wr.y + TITLE_H + 2, 50, 24), text=m))
            x += self.text_width(m) + 20
        body = Rect(wr.x + 12, wr.y + TITLE_H + 34, wr.w - 24, wr.h - TITLE_H - 70)
        self.body = TextArea(body, name="document", words=r.sample(TEXT_WORDS, 8), measure=self.text_width)
        self.widgets.append(self.body)
        self.status = Label(Rect(wr.x + 12, wr.bottom - 28, wr.w - 24, 22), text="Ready", color="text_dim")
        self.widgets.append(self.status)
        self.known = {c: s for _, _, c, s in SHORTCUTS}
        verb, inf, self.combo, _ = r.choice(SHORTCUTS)
        k = _pretty(self.combo)
        self.instruction = self.phrase(
            "{v} with {k}.",
            "Press {k} to {i}.",
            "Use the keyboard shortcut {k} to {i}.",
            v=verb, k=k, i=inf)

    def on_key(self, combo: str) -> bool:
        c = combo.lower()
        if c in self.known:
            self.status.text = self.known[c]
            self.end(c == self.combo, "success" if c == self.combo else "wrong shortcut")
            return True
        return False

    def expert(self) -> list[Action]:
        if not self.body.focused:  # into the document first, as a person does
            return self.click(self.body)
        return [Key(self.combo)]


CONFIRMS = (
    ("Delete", "Delete {n} files?"),
    ("Move to Trash", "Move {n} items to the Trash?"),
    ("Archive", "Archive {n} files?"),
    ("Remove", "Remove {n} files from the list?"),
)
ANSWERS = (("Yes", "No"), ("OK", "Cancel"))


class ConfirmDialog(Task):
    """Press an action for the selected files, then confirm the dialog that asks (Yes / OK)."""

    name = "confirm-dialog"

    def build(self) -> None:
        r = self.rng
        win, area = self.window(r.choice(("Files", "Documents", "Downloads", "Projects")), r.uniform(420, 580),
                                r.uniform(300, 380))
        act, msg = r.choice(CONFIRMS)
        yes, no = r.choice(ANSWERS)
        tools = [act, *r.sample([w for w in BUTTON_WORDS if w not in (act, yes, no)], 2)]
        r.shuffle(tools)
        x = area.x
        self.tools: list[Button] = []
        for t in tools:
            b = self.add_button(x, area.y, t)
            self.tools.append(b)
            x = b.rect.right + 8
        self.act = next(b for b in self.tools if b.label == act)
        listr = Rect(area.x, area.y + 40, area.w, area.h - 40)
        self.widgets.append(Panel(listr.outset(1), fill="content", outline="content_border"))
        n_rows = max(2, min(8, int(listr.h // ROW_H)))
        names = [f + r.choice(EXTS) for f in r.sample(FILES, n_rows)]
        rows = [Row(Rect(listr.x, listr.y + i * ROW_H, listr.w, ROW_H), name=s, cells=[s]) for i, s in enumerate(names)]
        for row in rows:
            row.interactive = False
        self.n = r.randint(2, min(5, len(rows)))
        for row in r.sample(rows, self.n):
            row.selected = True
        self.widgets += rows
        self.message = msg.format(n=self.n)
        dw = min(self.lw - 16, max(320.0, self.text_width(self.message) + 48))
        dh = 130.0
        dx = win.rect.x + (win.rect.w - dw) / 2
        dy = win.rect.y + 60
        dx, dy = max(8.0, min(dx, self.lw - dw - 8)), max(8.0, min(dy, self.lh - TASKBAR_H - dh - 8))
        self.dialog = [Window(Rect(round(dx), round(dy), round(dw), dh), title=act, group="dialog", visible=False)]
        dr = self.dialog[0].rect
        self.dialog.append(Label(Rect(dr.x + PAD, dr.y + TITLE_H + 14, dr.w - 2 * PAD, 20), text=self.message,
                                 group="dialog", visible=False))
        self.widgets += self.dialog
        self.no = self.add_button(dr.right - PAD - 80, dr.bottom - PAD - 28, no, group="dialog")
        self.yes = self.add_button(self.no.rect.x - 88, dr.bottom - PAD - 28, yes, "primary", group="dialog")
        self.dialog += [self.no, self.yes]
        for w in self.dialog:
            w.visible = False
        self.instruction = self.phrase(
            'Click "{a}" for the {n} selected files and confirm with {y}.',
            'Press {a}, then answer {y} to "{m}"',
            "Confirm: click {a}, then {y} in the dialog.",
            a=act, n=str(self.n), y=yes, m=self.message)

    def on_activate(self, w: Widget, count: int) -> None:
        if w is self.act:
            for x in self.dialog:
                x.visible = True
            self.modal = "dialog"
        elif w is self.yes:
            self.end(True, "success")
            self._close()
        elif isinstance(w, Button):
            self.end(False, "wrong button")
            self._close()

    def _close(self) -> None:
        for x in self.dialog:
            x.visible = False
        self.modal = None

    def expert(self) -> list[Action]:
        return self.click(self.yes if self.modal == "dialog" else self.act)

    def target_word(self) -> str | None:
        return self.named(self.yes.label if self.modal == "dialog" else self.act.label.split()[0])


POPUPS = (
    ("Update available", "A new version is ready to install.", ("Not Now", "Later"), "Install Now"),
    ("Tip of the day", "Press F1 any time for help.", ("Dismiss", "Close"), "More Tips"),
    ("Connection restored", "You are back online.", ("OK", "Dismiss"), "Details"),
    ("Backup reminder", "Your last backup was 9 days ago.", ("Remind Me Later", "Skip"), "Back Up Now"),
    ("Cookies", "This app stores preferences on your computer.", ("Got It", "Close"), "Settings"),
)


class DismissPopup(Task):
    """Click the named button; a pop-up interrupts (after a moment, or at the first click) and must be
    dismissed first. Its other option fails."""

    name = "dismiss-popup"

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(WINDOW_TITLES), r.uniform(380, 540), r.uniform(220, 300))
        self.buttons = self.button_grid(area, r.sample(BUTTON_WORDS, r.randint(3, 5)))
        self.target = r.choice(self.buttons)
        title, msg, dismiss, bad = r.choice(POPUPS)
        self.t_pop = r.uniform(0.3, 1.2)
        words = [*dismiss[:1], bad]
        r.shuffle(words)
        pw = min(self.lw - 16, max(300.0, self.text_width(msg) + 40))
        ph = 120.0
        px = 8 + (self.lw - 16 - pw) * r.uniform(0.2, 0.8)
        py = 8 + (self.lh - TASKBAR_H - 16 - ph) * r.uniform(0.1, 0.9)
        win = Window(Rect(round(px), round(py), round(pw), ph), title=title, group="popup")
        wr = win.rect
        self.popup: list[Widget] = [win, Label(Rect(wr.x + PAD, wr.y + TITLE_H + 12, wr.w - 2 * PAD, 20), text=msg,
                                                group="popup")]
        self.widgets += self.popup
        self.options = self.button_row(wr.right - PAD, wr.bottom - PAD - 28, reversed(words), group="popup")
        self.close_x = Button(Rect(wr.right - 30, wr.y + 3, 26, TITLE_H - 6), name="×", style="close", group="popup")
        self.widgets.append(self.close_x)
        self.popup += [*self.options, self.close_x]
        self.dismiss = next(b for b in self.options if b.label == dismiss[0])
        self.popped = False
        for w in self.popup:
            w.visible = False
        self.instruction = self.phrase(
            'Click "{b}". If a notification pops up, dismiss it first.',
            "Press {b}; a dialog may interrupt you: dismiss it.",
            'Dismiss any pop-up, then click the "{b}" button.',
            b=self.target.label)

    def pop(self) -> None:
        self.popped = True
        for w in self.popup:
            w.visible = True
        self.modal = "popup"

    def unpop(self) -> None:
        for w in self.popup:
            w.visible = False
        self.modal = None

    def on_tick(self, t: float) -> None:
        if not self.popped and t >= self.t_pop:
            self.pop()

    def pointer_down(self, x: float, y: float, button: str, count: int) -> None:
        if not self.popped and button == "left" and self.interactive_at(x, y) is not None:
            self.pointer_move(x, y)
            self.pop()  # the click that was meant for the window is lost to the pop-up
            return
        super().pointer_down(x, y, button, count)

    def on_key(self, combo: str) -> bool:
        if combo == "escape" and self.modal == "popup":
            self.unpop()
            return True
        return False

    def on_activate(self, w: Widget, count: int) -> None:
        if w is self.dismiss or w is self.close_x:
            self.unpop()
        elif w in self.options:
            self.unpop()
            self.end(False, "wrong button")
        elif isinstance(w, Button):
            self.end(w is self.target, "success" if w is self.target else "wrong button")

    def expert(self) -> list[Action]:
        if self.modal == "popup":
            return self.click(self.dismiss)
        return self.click(self.target)

    def target_word(self) -> str | None:
        return self.named(self.dismiss.label) if self.modal == "popup" else self.named(self.target.label)


APPS = ("Notes", "Mail", "Calendar", "Photos", "Music", "Contacts", "Terminal", "Maps")


class RaiseWindow(Task):
    """Bring a window hidden behind another to the front from the taskbar, click the named button in it."""

    name = "raise-window"

    def build(self) -> None:
        r = self.rng
        apps = r.sample(APPS, r.randint(2, 3))
        avail_w, avail_h = self.lw - 16, self.lh - TASKBAR_H - 16
        self.wins: dict[str, list[Widget]] = {}
        self.frames: dict[str, Window] = {}
        self.buttons: dict[str, list[Button]] = {}
        words = r.sample(BUTTON_WORDS, 2 * len(apps))
        back_w, back_h = min(avail_w - 40, r.uniform(300, 440)), min(avail_h - 40, r.uniform(160, 240))
        bx = 8 + 20 + r.uniform(0, max(0.0, avail_w - 40 - back_w))
        by = 8 + 20 + r.uniform(0, max(0.0, avail_h - 40 - back_h))
        back = Rect(round(bx), round(by), round(back_w), round(back_h))
        for i, app in enumerate(apps):
            if i == 0:
                rect = back
            elif i == 1:  # the front window covers the one behind it
                m = 20.0
                rect = Rect(back.x - m, back.y - m, back.w + 2 * m, back.h + 2 * m)
            else:
                w, h = min(avail_w, r.uniform(240, 340)), min(avail_h, r.uniform(140, 200))
                rect = Rect(round(8 + r.uniform(0, avail_w - w)), round(8 + r.uniform(0, avail_h - h)), round(w),
                            round(h))
            g = f"w{i}"
            win = Window(rect, name=app, title=app, group=g)
            a = Rect(rect.x + PAD, rect.y + TITLE_H + PAD, rect.w - 2 * PAD, rect.h - TITLE_H - 2 * PAD)
            items: list[Widget] = [win, Label(Rect(a.x, a.y, a.w, 20), text=f"{app} is open.", color="muted", group=g)]
            self.widgets += items
            bs = [self.add_button(a.x + j * 110, a.bottom - 28, words[2 * i + j], group=g) for j in range(2)]
            self.wins[app], self.frames[app], self.buttons[app] = items + bs, win, bs
        self.order = list(apps)  # back to front
        x = 36.0
        self.bar: dict[str, TaskbarButton] = {}
        for app in apps:
            tb = TaskbarButton(Rect(x, self.lh - TASKBAR_H + 3, round(self.text_width(app) + 24), TASKBAR_H - 6),
                               name=app, label=app)
            self.bar[app] = tb
            self.widgets.append(tb)
            x += tb.rect.w + 4
        self.app = apps[0]
        self.target = r.choice(self.buttons[self.app])
        self.raise_(self.order[-1])
        self.instruction = self.phrase(
            'Bring "{w}" to the front from the taskbar and click "{b}".',
            "Switch to the {w} window using the taskbar, then press {b}.",
            'Activate {w} (it is behind another window) and click "{b}".',
            w=self.app, b=self.target.label)

    def raise_(self, app: str) -> None:
        self.order.remove(app)
        self.order.append(app)
        group = self.wins[app]
        self.widgets = [w for w in self.widgets if w not in group] + group
        for a in self.order:
            self.frames[a].active = a == app
            self.bar[a].active = a == app

    def on_background_click(self, x: float, y: float, count: int) -> None:
        w = self.hit(x, y)
        if isinstance(w, Window | Label) and w.group in {f.group for f in self.frames.values()}:
            app = next(a for a, f in self.frames.items() if f.group == w.group)
            if app != self.order[-1]:
                self.raise_(app)

    def on_activate(self, w: Widget, count: int) -> None:
        if isinstance(w, TaskbarButton):
            self.raise_(w.label)
        elif isinstance(w, Button):
            self.end(w is self.target, "success" if w is self.target else "wrong button")

    def expert(self) -> list[Action]:
        if self.order[-1] != self.app:
            return self.click(self.bar[self.app])
        return self.click(self.target)

    def target_word(self) -> str | None:
        return self.named(self.target.label if self.order[-1] == self.app else self.app)


class WaitSpinner(Task):
    """Wait while a spinner turns; click the named button once the content has loaded."""

    name = "wait-spinner"

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(("Loading", "Downloads", "Connecting", "Store", "Portal")), r.uniform(380, 540),
                              r.uniform(220, 300))
        self.ready_t = r.uniform(1.0, 2.5)
        self.spinner = Spinner(Rect(area.x + area.w / 2 - 70, area.y + area.h / 2 - 14, 160, 28), name="spinner",
                               label=r.choice(("Loading...", "Please wait...", "Connecting...")))
        self.widgets.append(self.spinner)
        self.buttons = self.button_grid(area, r.sample(BUTTON_WORDS, r.randint(2, 4)))
        for b in self.buttons:
            b.visible = False
        self.target = r.choice(self.buttons)
        self.instruction = self.phrase(
            'Wait for the page to load, then click "{b}".',
            "When loading finishes, press {b}.",
            'Click "{b}" once it appears.',
            b=self.target.label)

    @property
    def loaded(self) -> bool:
        return not self.spinner.visible

    def on_tick(self, t: float) -> None:
        if self.loaded:
            return
        if t >= self.ready_t:
            self.spinner.visible = False
            for b in self.buttons:
                b.visible = True
        else:
            self.spinner.phase = int(t * 10) % 8

    def on_activate(self, w: Widget, count: int) -> None:
        if isinstance(w, Button):
            self.end(w is self.target, "success" if w is self.target else "wrong button")

    def expert(self) -> list[Action]:
        if not self.loaded:
            pause = 0.3 if not self.human_like else random.Random(f"spin/{self.seed}/{self.steps}").uniform(0.2, 0.5)
            return [Wait(round(pause, 3))]
        return self.click(self.target)

    def target_word(self) -> str | None:
        return self.named(self.target.label) if self.loaded else None


class AbsentTarget(Task):
    """The instruction names a button that is not on the screen: nothing fits it, and the right
    thing is to do nothing. Pressing any button, or typing, ends the episode as a failure; waiting
    :attr:`wait_s` seconds with neither is the success (clicks on the window's empty parts are
    harmless here, as in every family). What a worker does when lost (`dw eval --tasks absent-target`)."""

    name = "absent-target"
    wait_s = 3.0

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(WINDOW_TITLES), r.uniform(340, 560), r.uniform(200, 340))
        labels = r.sample(BUTTON_WORDS, r.randint(3, 6))
        self.buttons = self.button_grid(area, labels)
        absent = r.choice([w for w in BUTTON_WORDS if w not in labels])
        self.instruction = self.phrase('Click the "{b}" button.', "Press {b}.", 'Choose "{b}".', b=absent)

    def on_activate(self, w: Widget, count: int) -> None:
        self.end(False, "acted without the target")

    def key(self, combo: str) -> None:
        self.end(False, "acted without the target")

    def type_text(self, text: str) -> None:
        self.end(False, "acted without the target")

    def on_tick(self, t: float) -> None:
        if t >= self.wait_s:
            self.end(True, "success")  # it waited

    def expert(self) -> list[Action]:
        return [Wait(0.3 if not self.human_like else round(random.Random(f"absent/{self.seed}/{self.steps}").uniform(0.2, 0.5), 3))]


FLOWS = (ReplaceWord, CopyPaste, KeyboardShortcut, ConfirmDialog, DismissPopup, RaiseWindow, WaitSpinner, AbsentTarget)
