"""A GTK 3 task app for the apps suite: builds one task's window from a JSON spec with GTK's own widgets.

Run as a subprocess with a Python that has PyGObject and GTK 3 (Debian: ``python3-gi``,
``gir1.2-gtk-3.0``; the suite uses ``/usr/bin/python3`` when its own Python lacks them):
``python3 gtk_app.py SPEC_JSON``. The protocol is :mod:`agent.desktops.apps.tk_app`'s: one
command a line on stdin (``state``, ``quit``), one JSON line back per ``state`` with the visible
targets in root-window pixels, the widgets' values and the user's events. It imports nothing of ours.
"""

import json
import sys
import threading

import gi

gi.require_version("Gtk", "3.0")
from gi.repository import GLib, Gtk  # noqa: E402

spec = json.loads(sys.argv[1])
kind, p = spec["kind"], spec["params"]
W, H = spec.get("size", [640, 480])

win = Gtk.Window(title=spec.get("title", "dw task"))
win.set_default_size(W, H)
win.move(0, 0)
win.connect("destroy", Gtk.main_quit)
events: list = []
targets: dict = {}  # id -> widget, or a callable giving [x, y, w, h] / None
values: dict = {}  # id -> callable giving the value
dialogs: list = []


def emit(**kw):
    events.append(kw)


def geom(w):
    if not (w.get_visible() and w.get_mapped()):
        return None
    top = w.get_toplevel()
    gw = top.get_window()
    if gw is None:
        return None
    ox, oy = gw.get_origin()[1:]
    if w is top:
        x, y = 0, 0
    else:
        xy = w.translate_coordinates(top, 0, 0)
        if xy is None:
            return None
        x, y = xy
    a = w.get_allocation()
    return [ox + x, oy + y, a.width, a.height]


outer = Gtk.Box(orientation=Gtk.Orientation.VERTICAL)
win.add(outer)
body = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=6, margin=24)
heading = Gtk.Label(xalign=0)
heading.set_markup(f"<b>{GLib.markup_escape_text(spec.get('heading', ''))}</b>")
body.pack_start(heading, False, False, 6)


def left(w):
    w.set_halign(Gtk.Align.START)
    return w


def submit_button(label="Submit"):
    def submit(_b):
        emit(submitted={k: f() for k, f in values.items()})
    b = left(Gtk.Button(label=label))
    b.set_size_request(110, -1)
    b.connect("clicked", submit)
    body.pack_start(b, False, False, 12)
    targets[f"button:{label}"] = b


if kind == "button":
    grid = Gtk.Grid(column_spacing=20, row_spacing=20, margin_top=20)
    for i, label in enumerate(p["labels"]):
        b = Gtk.Button(label=label)
        b.set_size_request(110, -1)
        b.connect("clicked", lambda _b, s=label: emit(clicked=s))
        grid.attach(b, i % 3, i // 3, 1, 1)
        targets[f"button:{label}"] = b
    body.pack_start(grid, False, False, 0)

elif kind == "form":
    grid = Gtk.Grid(column_spacing=10, row_spacing=8)
    for i, label in enumerate(p["fields"]):
        grid.attach(Gtk.Label(label=f"{label}:", xalign=0), 0, i, 1, 1)
        e = Gtk.Entry(width_chars=28)
        grid.attach(e, 1, i, 1, 1)
        targets[f"field:{label}"] = e
        values[f"field:{label}"] = e.get_text
    body.pack_start(grid, False, False, 0)
    submit_button()

elif kind == "check":
    for label in p["labels"]:
        c = left(Gtk.CheckButton(label=label))
        body.pack_start(c, False, False, 0)
        targets[f"check:{label}"] = c
        values[f"check:{label}"] = c.get_active
    submit_button()

elif kind == "radio":
    none = Gtk.RadioButton(label="none")  # the group's hidden leader: nothing is chosen at the start
    none.set_no_show_all(True)
    body.pack_start(none, False, False, 0)
    chosen = {"v": ""}
    for label in p["labels"]:
        r = left(Gtk.RadioButton(label=label, group=none))

        def toggled(btn, s=label):
            if btn.get_active():
                chosen["v"] = s
                emit(selected=s)
        r.connect("toggled", toggled)
        body.pack_start(r, False, False, 0)
        targets[f"radio:{label}"] = r
    values["radio"] = lambda: chosen["v"]

elif kind == "settings":
    body.pack_start(left(Gtk.Label(label=f"{p['group']}:")), False, False, 0)
    first = None
    chosen = {"v": p["current"]}
    for label in p["labels"]:
        r = left(Gtk.RadioButton(label=label, group=first))
        r.set_margin_start(16)
        first = first or r
        r.set_active(label == p["current"])

        def toggled(btn, s=label):
            if btn.get_active():
                chosen["v"] = s
        r.connect("toggled", toggled)
        body.pack_start(r, False, False, 0)
        targets[f"radio:{label}"] = r
    values["radio"] = lambda: chosen["v"]
    row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=10, margin_top=12)
    for label, ev in (("OK", lambda _b: emit(submitted={"radio": chosen["v"]})),
                      ("Cancel", lambda _b: emit(clicked="Cancel"))):
        b = Gtk.Button(label=label)
        b.set_size_request(90, -1)
        b.connect("clicked", ev)
        row.pack_start(b, False, False, 0)
        targets[f"button:{label}"] = b
    body.pack_start(left(row), False, False, 0)

elif kind == "list":
    lb = Gtk.ListBox(selection_mode=Gtk.SelectionMode.SINGLE)
    lb.set_size_request(260, -1)
    rows = {}
    for item in p["items"]:
        row = Gtk.ListBoxRow()
        row.add(Gtk.Label(label=item, xalign=0, margin=4))
        lb.add(row)
        rows[item] = row
        targets[f"item:{item}"] = row
    names = {id(r): s for s, r in rows.items()}
    # A click activates (and selects) a row; selection alone also follows keyboard focus at start-up.
    lb.connect("row-activated", lambda _lb, row: emit(selected=names[id(row)]))
    frame = left(Gtk.Frame())
    frame.add(lb)
    body.pack_start(frame, False, False, 0)
    values["list"] = lambda: [names[id(r)] for r in lb.get_selected_rows()]

elif kind == "spin":
    body.pack_start(Gtk.Label(label=p["label"] + ":", xalign=0), False, False, 0)
    adj = Gtk.Adjustment(value=p["start"], lower=p["lo"], upper=p["hi"], step_increment=1, page_increment=5)
    s = left(Gtk.SpinButton(adjustment=adj, digits=0, numeric=True))
    body.pack_start(s, False, False, 0)
    targets["spin"] = s

    def spin_value():
        s.update()
        return s.get_text()
    values["spin"] = spin_value
    submit_button("OK")

elif kind == "scale":
    body.pack_start(Gtk.Label(label=p["label"], xalign=0), False, False, 0)
    sc = left(Gtk.Scale.new_with_range(Gtk.Orientation.HORIZONTAL, p["lo"], p["hi"], 1))
    sc.set_digits(0)
    sc.set_size_request(420, -1)
    sc.set_value(p["start"])
    for v in range(p["lo"], p["hi"] + 1):
        sc.add_mark(v, Gtk.PositionType.BOTTOM, None)
    body.pack_start(sc, False, False, 0)
    values["scale"] = lambda: int(round(sc.get_value()))

    def value_pos(v):
        def g():
            box = geom(sc)
            if box is None:
                return None
            r = sc.get_range_rect()
            a, b = sc.get_slider_range()
            slen = b - a
            span = max(1, r.width - slen)
            x = r.x + slen / 2 + (v - p["lo"]) / (p["hi"] - p["lo"]) * span
            return [box[0] + round(x) - 2, box[1] + r.y + r.height // 2 - 2, 5, 5]
        return g
    for v in range(p["lo"], p["hi"] + 1):
        targets[f"scale:{v}"] = value_pos(v)
    submit_button("OK")

elif kind == "menu":
    bar = Gtk.MenuBar()
    for title, items in p["menus"].items():
        top = Gtk.MenuItem(label=title)
        sub = Gtk.Menu()
        for item in items:
            mi = Gtk.MenuItem(label=item)
            mi.connect("activate", lambda _m, t=title, s=item: emit(chosen=f"{t}>{s}"))
            sub.append(mi)
            targets[f"menuitem:{title}>{item}"] = mi
        top.set_submenu(sub)
        bar.append(top)
        targets[f"menu:{title}"] = top
    outer.pack_start(bar, False, False, 0)

elif kind == "dialog":
    def ask(_b):
        d = Gtk.MessageDialog(transient_for=win, modal=True, message_type=Gtk.MessageType.QUESTION,
                              buttons=Gtk.ButtonsType.YES_NO, text=p["question"], title=p["title"])

        def response(dlg, rid):
            emit(answer="yes" if rid == Gtk.ResponseType.YES else "no")
            dialogs.remove(dlg)
            dlg.destroy()
        d.connect("response", response)
        dialogs.append(d)
        d.show_all()
    b = left(Gtk.Button(label=p["button"]))
    b.set_size_request(150, -1)
    b.connect("clicked", ask)
    body.pack_start(b, False, False, 20)
    targets[f"button:{p['button']}"] = b

    def dialog_button(rid):
        def g():
            if not dialogs:
                return None
            return geom(dialogs[-1].get_widget_for_response(rid))
        return g
    targets["dialog:Yes"] = dialog_button(Gtk.ResponseType.YES)
    targets["dialog:No"] = dialog_button(Gtk.ResponseType.NO)

else:
    raise SystemExit(f"gtk_app: unknown task kind {kind!r}")

outer.pack_start(body, True, True, 0)


def state():
    out = {}
    for k, w in targets.items():
        g = geom(w) if isinstance(w, Gtk.Widget) else w()
        if g is not None and g[2] > 0 and g[3] > 0:
            out[k] = g
    return {"ready": win.get_mapped(), "targets": out, "values": {k: f() for k, f in values.items()},
            "events": events}


def handle(cmd):
    if cmd == "quit":
        Gtk.main_quit()
    elif cmd == "state":
        sys.stdout.write(json.dumps(state()) + "\n")
        sys.stdout.flush()
    return False


def read_stdin():
    for line in sys.stdin:
        GLib.idle_add(handle, line.strip())
    GLib.idle_add(handle, "quit")


threading.Thread(target=read_stdin, daemon=True).start()
win.show_all()
if kind == "list":
    win.set_focus(None)
    lb.unselect_all()
Gtk.main()
