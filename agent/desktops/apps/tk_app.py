"""A Tk task app for the apps suite: builds one task's window from a JSON spec with Tk's own widgets.

Run as a subprocess (``python tk_app.py SPEC_JSON``; any Python with ``tkinter``). It reads one
command a line on stdin and answers each with one JSON line on stdout:

- ``state``: ``{"ready", "targets": {id: [x, y, w, h]}, "values": {...}, "events": [...]}`` —
  every visible target in root-window pixels (fields, buttons, checkboxes, list rows, posted menu
  entries, the message box's buttons, a scale's value positions), the widgets' values, and what
  the user did (``clicked``, ``submitted``, ``selected``, ``chosen``, ``answer``) in order.
- ``quit``: the app exits.

The task logic (instruction, goal, success check, expert) lives in :mod:`agent.desktops.apps.tasks`;
this file only shows the widgets and reports what they hold. It imports nothing of ours.
"""

import json
import queue
import sys
import threading
import tkinter as tk
from tkinter import messagebox

spec = json.loads(sys.argv[1])
kind, p = spec["kind"], spec["params"]
W, H = spec.get("size", [640, 480])

root = tk.Tk()
root.title(spec.get("title", "dw task"))
root.geometry(f"{W}x{H}+0+0")
PALETTES = {"dark": {"background": "#2d2d2d", "foreground": "#e8e8e8", "activeBackground": "#454545",
                     "selectBackground": "#3465a4", "selectForeground": "#ffffff", "insertBackground": "#e8e8e8",
                     "selectColor": "#1e1e1e"},
            "wheat": {"background": "wheat"},
            "slate": {"background": "#b0c4de", "foreground": "#102030", "selectBackground": "#304870",
                      "selectForeground": "#ffffff"}}
if spec.get("look", "default") in PALETTES:
    root.tk_setPalette(**PALETTES[spec["look"]])
events: list = []
targets: dict = {}  # id -> widget (or a callable giving [x, y, w, h] / None)
values: dict = {}  # id -> callable giving the value


def emit(**kw):
    events.append(kw)


def geom(w):
    if not w.winfo_viewable():
        return None
    return [w.winfo_rootx(), w.winfo_rooty(), w.winfo_width(), w.winfo_height()]


body = tk.Frame(root, padx=24, pady=16)
body.pack(fill="both", expand=True)
tk.Label(body, text=spec.get("heading", ""), font=("TkDefaultFont", 12, "bold")).pack(anchor="w", pady=(0, 10))


def submit_button(label="Submit", collect=None):
    def submit():
        emit(submitted={k: f() for k, f in (collect or values).items()})
    b = tk.Button(body, text=label, command=submit, width=10)
    b.pack(anchor="w", pady=(14, 0))
    targets[f"button:{label}"] = b


if kind == "button":
    row = tk.Frame(body)
    row.pack(anchor="w", pady=20)
    for i, label in enumerate(p["labels"]):
        b = tk.Button(row, text=label, width=9, command=lambda s=label: emit(clicked=s))
        b.grid(row=i // 3, column=i % 3, padx=10, pady=10)
        targets[f"button:{label}"] = b

elif kind == "form":
    grid = tk.Frame(body)
    grid.pack(anchor="w")
    for i, label in enumerate(p["fields"]):
        tk.Label(grid, text=f"{label}:").grid(row=i, column=0, sticky="w", padx=(0, 10), pady=6)
        e = tk.Entry(grid, width=28)
        e.grid(row=i, column=1, pady=6)
        targets[f"field:{label}"] = e
        values[f"field:{label}"] = e.get
    submit_button()

elif kind == "check":
    for label in p["labels"]:
        v = tk.BooleanVar(value=False)
        c = tk.Checkbutton(body, text=label, variable=v)
        c.pack(anchor="w", pady=3)
        targets[f"check:{label}"] = c
        values[f"check:{label}"] = v.get
    submit_button()

elif kind == "radio":
    var = tk.StringVar(value="")
    for label in p["labels"]:
        r = tk.Radiobutton(body, text=label, value=label, variable=var,
                           command=lambda: emit(selected=var.get()))
        r.pack(anchor="w", pady=3)
        targets[f"radio:{label}"] = r
    values["radio"] = var.get

elif kind == "settings":
    row = tk.Frame(body)
    row.pack(anchor="w")
    tk.Label(row, text=f"{p['group']}:").pack(anchor="w", pady=(0, 4))
    var = tk.StringVar(value=p["current"])
    for label in p["labels"]:
        r = tk.Radiobutton(row, text=label, value=label, variable=var)
        r.pack(anchor="w", padx=(16, 0), pady=2)
        targets[f"radio:{label}"] = r
    values["radio"] = var.get
    buttons = tk.Frame(body)
    buttons.pack(anchor="w", pady=(18, 0))
    ok = tk.Button(buttons, text="OK", width=8, command=lambda: emit(submitted={"radio": var.get()}))
    cancel = tk.Button(buttons, text="Cancel", width=8, command=lambda: emit(clicked="Cancel"))
    ok.pack(side="left", padx=(0, 10))
    cancel.pack(side="left")
    targets["button:OK"], targets["button:Cancel"] = ok, cancel

elif kind == "list":
    lb = tk.Listbox(body, height=len(p["items"]), width=24, exportselection=False)
    for item in p["items"]:
        lb.insert("end", item)
    lb.pack(anchor="w")

    def on_select(_e):
        sel = lb.curselection()
        if sel:
            emit(selected=lb.get(sel[0]))
    lb.bind("<<ListboxSelect>>", on_select)

    def row_geom(i):
        def g():
            if not lb.winfo_viewable():
                return None
            bb = lb.bbox(i)
            if not bb:
                return None
            return [lb.winfo_rootx() + 2, lb.winfo_rooty() + bb[1], lb.winfo_width() - 4, bb[3]]
        return g
    for i, item in enumerate(p["items"]):
        targets[f"item:{item}"] = row_geom(i)
    values["list"] = lambda: [lb.get(i) for i in lb.curselection()]

elif kind == "spin":
    tk.Label(body, text=p["label"] + ":").pack(anchor="w")
    sv = tk.StringVar(value=str(p["start"]))
    s = tk.Spinbox(body, from_=p["lo"], to=p["hi"], textvariable=sv, width=8, font=("TkDefaultFont", 12))
    s.pack(anchor="w", pady=6)
    targets["spin"] = s
    values["spin"] = sv.get
    submit_button("OK")

elif kind == "scale":
    sc = tk.Scale(body, from_=p["lo"], to=p["hi"], orient="horizontal", length=420, resolution=1,
                  label=p["label"], sliderlength=24)
    sc.set(p["start"])
    sc.pack(anchor="w", pady=6)
    values["scale"] = sc.get

    def value_pos(v):
        def g():
            if not sc.winfo_viewable():
                return None
            x, y = sc.coords(v)
            return [sc.winfo_rootx() + x - 2, sc.winfo_rooty() + y - 2, 5, 5]
        return g
    for v in range(p["lo"], p["hi"] + 1):
        targets[f"scale:{v}"] = value_pos(v)
    submit_button("OK")

elif kind == "menu":
    bar = tk.Frame(root, relief="raised", bd=1)
    bar.place(x=0, y=0, relwidth=1.0)
    menus = {}
    for title, items in p["menus"].items():
        mb = tk.Menubutton(bar, text=title, underline=0)
        m = tk.Menu(mb, tearoff=False)
        for item in items:
            m.add_command(label=item, command=lambda t=title, s=item: emit(chosen=f"{t}>{s}"))
        mb["menu"] = m
        mb.pack(side="left", padx=2)
        targets[f"menu:{title}"] = mb
        menus[title] = (m, items)

    def entry_geom(m, i, n):
        def g():
            if not m.winfo_ismapped():
                return None
            y0 = m.yposition(i)
            y1 = m.yposition(i + 1) if i + 1 < n else m.winfo_height() - 2
            return [m.winfo_rootx() + 2, m.winfo_rooty() + y0, m.winfo_width() - 4, y1 - y0]
        return g
    for title, (m, items) in menus.items():
        for i, item in enumerate(items):
            targets[f"menuitem:{title}>{item}"] = entry_geom(m, i, len(items))
    body.pack_configure(pady=(48, 16))

elif kind == "dialog":
    def ask():
        yes = messagebox.askyesno(p["title"], p["question"], parent=root)
        emit(answer="yes" if yes else "no")
    b = tk.Button(body, text=p["button"], command=ask, width=14)
    b.pack(anchor="w", pady=20)
    targets[f"button:{p['button']}"] = b

    def dialog_button(name):
        path = f".__tk__messagebox.{name}"

        def g():
            if not int(root.tk.call("winfo", "exists", path)) or not int(root.tk.call("winfo", "viewable", path)):
                return None
            return [int(root.tk.call("winfo", q, path)) for q in ("rootx", "rooty", "width", "height")]
        return g
    targets["dialog:Yes"] = dialog_button("yes")
    targets["dialog:No"] = dialog_button("no")

else:
    raise SystemExit(f"tk_app: unknown task kind {kind!r}")


def state():
    out = {}
    for k, w in targets.items():
        try:
            g = w() if callable(w) and not isinstance(w, tk.Misc) else geom(w)
        except tk.TclError:
            g = None
        if g is not None:
            out[k] = g
    vals = {}
    for k, f in values.items():
        try:
            vals[k] = f()
        except tk.TclError:
            vals[k] = None
    return {"ready": True, "targets": out, "values": vals, "events": events}


commands: queue.Queue = queue.Queue()


def read_stdin():
    for line in sys.stdin:
        commands.put(line.strip())
    commands.put("quit")


def poll():
    while True:
        try:
            cmd = commands.get_nowait()
        except queue.Empty:
            break
        if cmd == "quit":
            root.destroy()
            return
        if cmd == "state":
            root.update_idletasks()
            sys.stdout.write(json.dumps(state()) + "\n")
            sys.stdout.flush()
    root.after(10, poll)


threading.Thread(target=read_stdin, daemon=True).start()
root.after(10, poll)
root.mainloop()
