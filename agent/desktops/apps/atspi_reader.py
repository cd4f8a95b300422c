"""Reads an app's accessibility tree over AT-SPI; run as a subprocess with a Python that has
``gi`` and the ``Atspi`` typelib (Debian: ``python3-gi``, ``gir1.2-atspi-2.0``; the suite uses
``/usr/bin/python3``), on the session bus in ``DBUS_SESSION_BUS_ADDRESS``.

``python3 atspi_reader.py APP_NAME``; one command a line on stdin, one JSON line back:

- ``tree``: ``{"ok": true, "window": [x, y, w, h] | null, "nodes": [{"role", "name", "states", "box"}]}``
  — every showing, named node of the app's first window, in tree order, boxes in screen pixels;
  ``{"ok": false, "error": "..."}`` when the app is not (yet) on the bus.
- ``quit``.

Before the first command it prints one line: ``{"ok": true}`` once the accessibility registry
answers, or ``{"ok": false, "error": "..."}`` (no bus, no registry). Imports nothing of ours.
"""

import json
import sys

try:
    import gi

    gi.require_version("Atspi", "2.0")
    from gi.repository import Atspi
except (ImportError, ValueError) as e:
    print(json.dumps({"ok": False, "error": f"no AT-SPI client library ({e})"}), flush=True)
    raise SystemExit(0) from None

STATES = {"checked": Atspi.StateType.CHECKED, "selected": Atspi.StateType.SELECTED,
          "focused": Atspi.StateType.FOCUSED, "pressed": Atspi.StateType.PRESSED}


def find_app(name):
    desk = Atspi.get_desktop(0)
    for i in range(desk.get_child_count()):
        app = desk.get_child_at_index(i)
        if app is not None and app.get_name() == name:
            return app
    return None


def box(acc):
    comp = acc.get_component_iface()
    if comp is None:
        return None
    e = comp.get_extents(Atspi.CoordType.SCREEN)
    return [e.x, e.y, e.width, e.height]


def walk(acc, out):
    try:
        role, name, st = acc.get_role_name(), acc.get_name(), acc.get_state_set()
    except Exception:
        return
    if not st.contains(Atspi.StateType.SHOWING):
        return
    if name:
        out.append({"role": role, "name": name, "states": [k for k, v in STATES.items() if st.contains(v)],
                    "box": box(acc)})
    for j in range(acc.get_child_count()):
        child = acc.get_child_at_index(j)
        if child is not None:
            walk(child, out)


def tree(name):
    app = find_app(name)
    if app is None or app.get_child_count() == 0:
        return {"ok": False, "error": f"{name} is not on the accessibility bus"}
    window = app.get_child_at_index(0)
    nodes = []
    walk(window, nodes)
    return {"ok": True, "window": box(window), "nodes": nodes}


def main():
    import warnings

    warnings.simplefilter("ignore")  # get_component_iface is deprecated in newer libatspi, not gone
    name = sys.argv[1]
    try:
        Atspi.get_desktop(0).get_child_count()
        print(json.dumps({"ok": True}), flush=True)
    except Exception as e:
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
        return
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            return
        try:
            reply = tree(name)
        except Exception as e:
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


main()
