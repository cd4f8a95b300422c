"""A tiny Tk target app for live-desktop tests.

Usage: python tk_target.py LOGFILE [WIDTHxHEIGHT]

Fills the screen from (0, 0) with a button and an entry, then appends one JSON line per event it
receives to LOGFILE (flushed at once): first ``{"ev": "ready", "button": [x, y, w, h], "entry":
[x, y, w, h]}`` in root-window pixels, then presses, releases, button commands, key presses,
motion and the entry's text, each with root coordinates where X gives them.
"""

import json
import sys
import tkinter as tk

log_path = sys.argv[1]
size = sys.argv[2] if len(sys.argv) > 2 else "640x480"
out = open(log_path, "a", buffering=1)


def emit(**kw):
    out.write(json.dumps(kw) + "\n")


root = tk.Tk()
root.title("dw tk target")
root.geometry(f"{size}+0+0")
root.configure(bg="#202020")
button = tk.Button(root, text="Press me", name="button", command=lambda: emit(ev="command"))
button.place(relx=0.25, rely=0.2, relwidth=0.5, relheight=0.2)
entry = tk.Entry(root, name="entry", font=("TkFixedFont", 14))
entry.place(relx=0.1, rely=0.6, relwidth=0.8, relheight=0.12)


def geom(w):
    return [w.winfo_rootx(), w.winfo_rooty(), w.winfo_width(), w.winfo_height()]


def widget_name(w):
    return str(w).rsplit(".", 1)[-1] or "root"


root.bind_all("<ButtonPress>", lambda e: emit(ev="press", widget=widget_name(e.widget), x_root=e.x_root,
                                              y_root=e.y_root, button=e.num))
root.bind_all("<ButtonRelease>", lambda e: emit(ev="release", widget=widget_name(e.widget), x_root=e.x_root,
                                                y_root=e.y_root, button=e.num))
root.bind_all("<Motion>", lambda e: emit(ev="motion", x_root=e.x_root, y_root=e.y_root))
root.bind_all("<KeyPress>", lambda e: emit(ev="key", keysym=e.keysym, char=e.char, widget=widget_name(e.widget)))
entry.bind("<KeyRelease>", lambda e: emit(ev="entry", text=entry.get()))
entry.bind("<ButtonPress>", lambda e: entry.focus_set(), add="+")


def ready():
    root.update_idletasks()
    emit(ev="ready", button=geom(button), entry=geom(entry), root=geom(root))


root.after(200, ready)
root.mainloop()
