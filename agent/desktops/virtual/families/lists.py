"""Lists, tables, trees, search results, a context menu and drag and drop."""

from __future__ import annotations

from agent.desktops.virtual.base import ANY_WORDS, ICON_COLORS, ICON_NAMES, TASKBAR_H, TEXT_WORDS, Task
from agent.desktops.virtual.controls import ArrowButton, DragIcon, Row
from agent.desktops.virtual.render import Rect
from agent.desktops.virtual.widgets import Icon, Label, MenuItem, Panel, TextField, Widget
from policies.actions import Action, Drag, Key, MouseDown, MouseUp, Move, Scroll, Type

COUNTRIES = (
    "Argentina", "Australia", "Austria", "Belgium", "Bolivia", "Brazil", "Canada", "Chile", "China", "Colombia",
    "Croatia", "Denmark", "Egypt", "Estonia", "Finland", "France", "Germany", "Ghana", "Greece", "Hungary",
    "Iceland", "India", "Ireland", "Italy", "Japan", "Kenya", "Latvia", "Mexico", "Morocco", "Nepal", "Norway",
    "Peru", "Poland", "Portugal", "Romania", "Senegal", "Spain", "Sweden", "Turkey", "Uganda", "Vietnam", "Zambia",
)
PEOPLE = ("Maria", "Ahmed", "Chen", "Olga", "Pedro", "Aisha", "Lukas", "Priya", "Tom", "Yuki", "Nina", "Omar")
STATUS = ("Draft", "Final", "Review", "Shared", "Archived", "Pending")
FILES = ("report", "budget", "notes", "invoice", "slides", "summary", "plan", "minutes", "draft", "letter",
         "contract", "agenda", "survey", "roadmap")
EXTS = (".txt", ".pdf", ".docx", ".xlsx", ".md", ".csv")
FOLDERS = {
    "Finance": ("Budget", "Invoices", "Taxes", "Payroll", "Receipts"),
    "Projects": ("Website", "Launch", "Research", "Prototype", "Migration"),
    "Personal": ("Photos", "Recipes", "Travel", "Health", "Letters"),
    "Music": ("Jazz", "Classical", "Podcasts", "Playlists"),
    "School": ("Homework", "Lectures", "Exams", "Thesis"),
    "Archive": ("Old Mail", "Backups", "Scans", "Legacy"),
}
PLACES = ("Lodge", "Street", "Studio", "Park", "Report", "Bakery", "Hotel", "Garden", "Museum", "Station")
CONTEXT_ACTIONS = ("Open", "Rename", "Copy", "Cut", "Move to Trash", "Properties", "Share", "Compress")
ROW_H = 24.0


class _Open(Task):
    """Select one row of a list-like control, then press Open; checked at Open."""

    rows: list[Row]
    target: Row

    def add_open(self, area: Rect) -> None:
        self.commit = self.add_button(area.right - 90, area.bottom - 28, "Open", "primary")

    def select(self, row: Row | None) -> None:
        for x in self.rows:
            x.selected = x is row

    def on_activate(self, w: Widget, count: int) -> None:
        if isinstance(w, Row):
            self.select(w)
        elif w is self.commit:
            ok = self.target.selected and self.target.visible
            self.end(ok, "success" if ok else "wrong selection")


class ScrollList(_Open):
    """Scroll a long list to the named item (wheel or arrows), select it, press Open."""

    name = "scroll-list"
    time_limit = 30.0

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(("Choose Country", "Region", "Select Item", "Locations")), r.uniform(300, 420),
                              r.uniform(280, 380))
        items = sorted(r.sample(COUNTRIES, r.randint(18, 30)))
        n_vis = max(4, int((area.h - 44) // ROW_H))
        self.vp = Rect(area.x, area.y, area.w - 24, n_vis * ROW_H)
        self.widgets.append(Panel(self.vp.outset(1), fill="content", outline="content_border"))
        self.rows = [Row(Rect(self.vp.x, self.vp.y, self.vp.w, ROW_H), name=s, cells=[s]) for s in items]
        self.widgets += self.rows
        self.n_vis = n_vis
        self.offset = 0
        self.up = ArrowButton(Rect(self.vp.right + 4, self.vp.y, 20, 20), name="scroll up", direction="up")
        self.down = ArrowButton(Rect(self.vp.right + 4, self.vp.bottom - 20, 20, 20), name="scroll down",
                                direction="down")
        self.widgets += [self.up, self.down]
        self.add_open(area)
        self.target = self.rows[r.randint(min(n_vis, len(items) - 1), len(items) - 1)]
        self.layout()
        self.instruction = self.phrase(
            'Scroll to "{v}" in the list, select it and click Open.',
            "Find {v} in the list, select it, then press Open.",
            'Select "{v}" (scroll down if needed), then click Open.',
            v=self.target.cells[0])

    def layout(self) -> None:
        self.offset = max(0, min(self.offset, len(self.rows) - self.n_vis))
        for i, row in enumerate(self.rows):
            row.rect = Rect(self.vp.x, self.vp.y + (i - self.offset) * ROW_H, self.vp.w, ROW_H)
            row.visible = self.offset <= i < self.offset + self.n_vis
            row.hovered = row.hovered and row.visible

    def on_scroll(self, x: float, y: float, dx: int, dy: int) -> None:
        if self.vp.contains(x, y):
            self.offset += dy
            self.layout()

    def on_activate(self, w: Widget, count: int) -> None:
        if w in (self.up, self.down):
            self.offset += 1 if w is self.down else -1
            self.layout()
        else:
            super().on_activate(w, count)

    def expert(self) -> list[Action]:
        t = self.target
        if not t.visible:
            i = self.rows.index(t)
            dy = i - (self.offset + self.n_vis // 2)
            dy = max(-5, min(5, dy)) or (1 if i >= self.offset + self.n_vis else -1)
            at = self.reach(self.vp, "list")
            if isinstance(at, Move):
                return [at]
            return [Scroll(*self.norm(*at), dy=dy)]
        if not t.selected:
            return self.click(t)
        return self.click(self.commit)

    def target_word(self) -> str | None:
        t = self.target
        return self.named("Open" if t.selected else t.cells[0]) if t.visible else None


class ExpandTree(_Open):
    """Expand the named folder of a tree, select the named item in it, press Open."""

    name = "expand-tree"
    time_limit = 30.0

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(("Files", "Browse", "Library", "Explorer")), r.uniform(320, 440),
                              r.uniform(320, 420))
        folders = r.sample(list(FOLDERS), r.randint(3, 5))
        self.tree = Rect(area.x, area.y, area.w, area.h - 40)
        self.widgets.append(Panel(self.tree.outset(1), fill="content", outline="content_border"))
        self.rows = []
        self.kids: dict[str, list[Row]] = {}
        self.folders: list[Row] = []
        for f in folders:
            fr = Row(Rect(area.x, area.y, area.w, ROW_H), name=f, cells=[f], expander=False, columns=[22.0])
            self.folders.append(fr)
            self.rows.append(fr)
            kids = [Row(Rect(area.x, area.y, area.w, ROW_H), name=k, cells=[k], indent=20.0, columns=[22.0],
                        visible=False) for k in r.sample(FOLDERS[f], r.randint(2, 4))]
            self.kids[f] = kids
            self.rows += kids
        self.widgets += self.rows
        self.add_open(area)
        self.folder = r.choice(self.folders)
        self.target = r.choice(self.kids[self.folder.name])
        self.top = 0
        self.layout()
        self.instruction = self.phrase(
            'Expand "{f}" and select "{v}", then click Open.',
            "In the {f} folder, choose {v} and press Open.",
            'Select "{v}" inside the {f} folder, then click Open.',
            f=self.folder.name, v=self.target.name)

    def shown(self) -> list[Row]:
        """The rows a scrolled-to-top tree would show: folders, and the children of expanded ones."""
        return [row for fr in self.folders for row in [fr, *(self.kids[fr.name] if fr.expander else [])]]

    def layout(self) -> None:
        flat = self.shown()
        cap = max(1, int(self.tree.h // ROW_H))
        self.top = max(0, min(getattr(self, "top", 0), len(flat) - cap))
        for row in self.rows:
            if row not in flat:
                row.visible = row.selected = row.hovered = False
        for i, row in enumerate(flat):
            row.visible = self.top <= i < self.top + cap
            row.hovered = row.hovered and row.visible
            row.rect = Rect(self.tree.x, self.tree.y + (i - self.top) * ROW_H, self.tree.w, ROW_H)

    def toggle(self, fr: Row) -> None:
        """Expand or collapse a folder; an expanded folder scrolls into view with its children."""
        fr.expander = not fr.expander
        if fr.expander:
            flat = self.shown()
            cap = max(1, int(self.tree.h // ROW_H))
            fi = flat.index(fr)
            end = fi + len(self.kids[fr.name])
            if end >= self.top + cap:
                self.top = min(fi, end - cap + 1)
        self.layout()

    def on_scroll(self, x: float, y: float, dx: int, dy: int) -> None:
        if self.tree.contains(x, y):
            self.top = getattr(self, "top", 0) + dy
            self.layout()

    def on_activate(self, w: Widget, count: int) -> None:
        if isinstance(w, Row) and w.expander is not None and w.arrow.contains(*self.cursor):
            self.toggle(w)
        else:
            super().on_activate(w, count)

    def pointer_down(self, x: float, y: float, button: str, count: int) -> None:
        super().pointer_down(x, y, button, count)
        w = self.interactive_at(x, y)
        if button == "left" and count == 2 and isinstance(w, Row) and w.expander is not None:
            self.toggle(w)

    def expert(self) -> list[Action]:
        if not self.folder.expander:
            if not self.folder.visible:
                at = self.reach(self.tree, "tree")
                if isinstance(at, Move):
                    return [at]
                return [Scroll(*self.norm(*at), dy=-1 if self.shown().index(self.folder) < self.top else 1)]
            return self.click(self.folder, r=self.folder.arrow)
        if not self.target.visible:
            at = self.reach(self.tree, "tree")
            if isinstance(at, Move):
                return [at]
            return [Scroll(*self.norm(*at), dy=-1 if self.shown().index(self.target) < self.top else 1)]
        if not self.target.selected:
            return self.click(self.target)
        return self.click(self.commit)

    def target_word(self) -> str | None:
        if not self.folder.expander:
            return self.named(self.folder.name)
        if not self.target.visible:
            return None
        return self.named("Open" if self.target.selected else self.target.name)


class TableRow(_Open):
    """Select the table row whose column has the named value, press Open."""

    name = "table-row"

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(("Documents", "Shared Files", "Inbox", "Records")), r.uniform(460, 600),
                              r.uniform(280, 360))
        n = r.randint(5, 8)
        names = [f + r.choice(EXTS) for f in r.sample(FILES, n)]
        owners = [r.choice(PEOPLE) for _ in range(n)]
        status = [r.choice(STATUS) for _ in range(n)]
        sizes = [f"{r.randint(2, 990)} KB" for _ in range(n)]
        cols = {"Name": names, "Owner": owners, "Status": status, "Size": sizes}
        widths = [max(self.text_width(s) for s in [k, *v]) + 24 for k, v in cols.items()]
        xs = [8.0]
        for wd in widths[:-1]:
            xs.append(xs[-1] + wd)
        table = Rect(area.x, area.y, area.w, min(area.h - 40, ROW_H * (n + 1)))
        self.widgets.append(Panel(table.outset(1), fill="content", outline="content_border"))
        self.widgets.append(Panel(Rect(table.x, table.y, table.w, ROW_H), fill="menubar"))
        for k, x in zip(cols, xs, strict=True):
            self.widgets.append(Label(Rect(table.x + x, table.y, 100, ROW_H), text=k, bold=True))
        self.rows = []
        for i in range(n):
            y = table.y + ROW_H * (i + 1)
            if y + ROW_H > table.bottom:
                break
            cells = [names[i], owners[i], status[i], sizes[i]]
            self.rows.append(Row(Rect(table.x, y, table.w, ROW_H), name=names[i], cells=cells, columns=xs,
                                 stripe=i % 2 == 1))
        self.widgets += self.rows
        self.add_open(area)
        options = [(c, i) for c in range(4) for i, row in enumerate(self.rows)
                   if [x.cells[c] for x in self.rows].count(row.cells[c]) == 1]
        c, i = r.choice(options)
        self.target = self.rows[i]
        col, v = list(cols)[c], self.target.cells[c]
        self.instruction = self.phrase(
            'Select the row whose {c} is "{v}" and click Open.',
            "Find the row with {c} {v}, select it and press Open.",
            'Click the row where {c} is "{v}", then click Open.',
            c=col, v=v)
        self.key_word = v

    def expert(self) -> list[Action]:
        return self.click(self.commit if self.target.selected else self.target)

    def target_word(self) -> str | None:
        return self.named("Open" if self.target.selected else self.key_word)


class SearchPick(_Open):
    """Type a query into a search box, select the named result, press Open."""

    name = "search-pick"
    time_limit = 30.0

    def build(self) -> None:
        r = self.rng
        _, area = self.window(r.choice(("Search", "Find", "Places", "Directory")), r.uniform(360, 480),
                              r.uniform(300, 380))
        words = r.sample(TEXT_WORDS + ANY_WORDS, 6)
        entries = sorted({f"{w.capitalize()} {p}" for w in words for p in r.sample(PLACES, 3)})
        self.box = TextField(Rect(area.x, area.y, min(260.0, area.w), 28), name="search", placeholder="Search...")
        self.widgets.append(self.box)
        self.list = Rect(area.x, area.y + 38, area.w, area.h - 38 - 40)
        self.widgets.append(Panel(self.list.outset(1), fill="content", outline="content_border"))
        self.hint = Label(Rect(self.list.x + 8, self.list.y, 200, ROW_H), text="Type to search", color="text_dim")
        self.widgets.append(self.hint)
        self.rows = [Row(Rect(self.list.x, self.list.y, self.list.w, ROW_H), name=e, cells=[e], visible=False)
                     for e in entries]
        self.widgets += self.rows
        self.add_open(area)
        self.target = r.choice(self.rows)
        self.query = self.target.name.split()[0].lower()
        self.instruction = self.phrase(
            'Search for "{q}" and open "{v}".',
            "Type {q} into the search box, select {v} and click Open.",
            'Find "{v}" with the search box, then press Open.',
            q=self.query, v=self.target.name)

    def on_change(self, w: Widget) -> None:
        if w is self.box:
            q = self.box.text.strip().lower()
            y = self.list.y
            for row in self.rows:
                show = bool(q) and q in row.name.lower() and y + ROW_H <= self.list.bottom
                row.visible = show
                if show:
                    row.rect = Rect(self.list.x, y, self.list.w, ROW_H)
                    y += ROW_H
                else:
                    row.selected = row.hovered = False
            self.hint.visible = not q

    def expert(self) -> list[Action]:
        if not self.target.visible:
            if not self.box.focused:
                return self.click(self.box)
            full = self.target.name.lower()
            if self.box.text and not full.startswith(self.box.text.lower()):
                return [Key("backspace" if self.box.selected else "ctrl+a")]
            # the query; and where its results do not all fit, more of the name
            want = self.query if len(self.box.text) < len(self.query) else full
            return [Type(want[len(self.box.text):])]
        return self.click(self.commit if self.target.selected else self.target)

    def target_word(self) -> str | None:
        if not self.target.visible:
            return None
        return self.named("Open" if self.target.selected else self.target.name.split()[0])


class ContextMenu(Task):
    """Right-click the named desktop icon and choose the named action from its context menu."""

    name = "context-menu"

    def build(self) -> None:
        r = self.rng
        area = Rect(8, 8, self.lw - 16, self.lh - TASKBAR_H - 16)
        labels = r.sample(ICON_NAMES, r.randint(4, 7))
        cells = self.cells(area, len(labels), 100, 88)
        self.icons: list[Icon] = []
        for label, cell in zip(labels, cells, strict=False):
            w = max(84.0, round(self.text_width(label, 12.0) + 16))
            ic = Icon(Rect(cell.x + (100 - w) / 2, cell.y + 4, w, 80), name=label, label=label,
                      color=r.choice(ICON_COLORS), kind=r.choice(("folder", "document")))
            self.icons.append(ic)
            self.widgets.append(ic)
        actions = r.sample(CONTEXT_ACTIONS, r.randint(4, 6))
        iw = max(160.0, max(self.text_width(a) for a in actions) + 40)
        self.popup = Panel(Rect(0, 0, iw, 26 * len(actions) + 8), fill="popup", outline="popup_border", visible=False)
        self.widgets.append(self.popup)
        self.items = [MenuItem(Rect(0, 0, iw - 2, 26), name=a, label=a, visible=False) for a in actions]
        self.widgets += self.items
        self.menu_for: Icon | None = None
        self.target = r.choice(self.icons)
        self.action = r.choice(actions)
        self.instruction = self.phrase(
            'Right-click "{i}" and choose "{a}".',
            "Use the context menu of {i} to pick {a}.",
            'Open the right-click menu on "{i}", then select {a}.',
            i=self.target.label, a=self.action)

    def show_menu(self, icon: Icon | None, x: float = 0.0, y: float = 0.0) -> None:
        self.menu_for = icon
        on = icon is not None
        if on:
            p = self.popup.rect
            px = min(x, self.lw - p.w - 2)
            py = min(y, self.lh - TASKBAR_H - p.h - 2)
            self.popup.rect = Rect(px, py, p.w, p.h)
            for i, it in enumerate(self.items):
                it.rect = Rect(px + 1, py + 4 + 26 * i, p.w - 2, 26)
        self.popup.visible = on
        for it in self.items:
            it.visible = on
            it.hovered = it.hovered and on

    def on_context(self, w: Widget | None, x: float, y: float) -> None:
        if isinstance(w, Icon):
            for ic in self.icons:
                ic.selected = ic is w
            self.show_menu(w, x, y)
        else:
            self.show_menu(None)

    def on_background_click(self, x: float, y: float, count: int) -> None:
        self.show_menu(None)
        for ic in self.icons:
            ic.selected = False

    def pointer_down(self, x: float, y: float, button: str, count: int) -> None:
        if button == "left" and self.menu_for is not None and not isinstance(self.interactive_at(x, y), MenuItem):
            self.show_menu(None)
        super().pointer_down(x, y, button, count)

    def on_key(self, combo: str) -> bool:
        if combo == "escape" and self.menu_for is not None:
            self.show_menu(None)
            return True
        return False

    def on_activate(self, w: Widget, count: int) -> None:
        if isinstance(w, MenuItem):
            ok = self.menu_for is self.target and w.label == self.action
            self.show_menu(None)
            self.end(ok, "success" if ok else "wrong item")

    def expert(self) -> list[Action]:
        if self.menu_for is not self.target:
            if self.menu_for is not None:
                return [Key("escape")]
            return self.click(self.target, button="right")
        return self.click_entry(next(i for i in self.items if i.label == self.action))

    def target_word(self) -> str | None:
        if self.menu_for is not self.target:
            return self.named(self.target.label)
        return self.named(self.action.split()[0])


class DragToTarget(Task):
    """Drag the named icon onto the named container (Trash, a folder); another icon there fails."""

    name = "drag-to-target"

    def build(self) -> None:
        r = self.rng
        area = Rect(8, 8, self.lw - 16, self.lh - TASKBAR_H - 16)
        names = r.sample([n for n in ICON_NAMES if n not in ("Backup", "Archive")], r.randint(3, 5))
        box = r.choice(("Trash", "Archive", "Backup"))
        cells = self.cells(area, len(names) + 1, 110, 92)
        self.icons: list[DragIcon] = []
        self.box = Icon(Rect(cells[0].x + 13, cells[0].y + 4, 84, 80), name=box, label=box, color=(150, 160, 170),
                        kind="folder")
        self.box.interactive = False  # a drop target: dragging happens over it
        self.widgets.append(self.box)
        for label, cell in zip(names, cells[1:], strict=False):
            w = max(84.0, round(self.text_width(label, 12.0) + 16))
            ic = DragIcon(Rect(cell.x + (110 - w) / 2, cell.y + 4, w, 80), name=label, label=label,
                          color=r.choice(ICON_COLORS), kind=r.choice(("folder", "document")))
            self.icons.append(ic)
            self.widgets.append(ic)
        self.target = r.choice(self.icons)
        self.instruction = self.phrase(
            'Drag "{i}" onto the {b}.',
            'Move {i} to the "{b}" by dragging it.',
            'Put "{i}" in the {b} with drag and drop.',
            i=self.target.label, b=box)

    def on_drop(self, w: Widget, x: float, y: float) -> None:
        if self.box.rect.contains(x, y):
            w.visible = False
            self.end(w is self.target, "success" if w is self.target else "wrong item")

    def expert(self) -> list[Action]:
        goal = self.box.rect
        if self.dragging is self.target:
            at = self.reach(goal, "drop")
            if isinstance(at, Move):
                return [at]
            return [MouseUp(*self.norm(*at))]
        if not self.human_like:
            return [Drag(*self.norm(*self.target.rect.center), *self.norm(*goal.center))]
        at = self.reach(self.target.rect, self.target.name)
        if isinstance(at, Move):
            return [at]
        return [MouseDown(*self.norm(*at))]

    def target_word(self) -> str | None:
        return self.named(self.box.label if self.dragging is self.target else self.target.label)


LISTS = (ScrollList, ExpandTree, TableRow, SearchPick, ContextMenu, DragToTarget)
