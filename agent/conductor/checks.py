"""Step checks against what a desktop exposes: visible text, window titles, app-state probes.

Nothing here reads pixels. Each desktop offers what it knows:

- the virtual desktop (and the workflow scene) knows every word it draws and which ones are
  covered (:func:`agent.desktops.virtual.reading.paint_scene`), its windows' titles and its
  fields' contents: all three kinds of check;
- a live X11 desktop offers the active window's title (``_NET_ACTIVE_WINDOW`` through
  python-xlib); text and field checks need an accessibility reader it does not have;
- a desktop may offer its own ``probe(kind, value) -> (ok, detail)`` (a served or an app
  desktop); it is asked first.

A check a desktop cannot answer is reported before the run starts (:func:`unsupported`), never
silently passed.
"""

from __future__ import annotations

import os
from typing import Any

from agent.conductor.workflow import Check, Workflow
from agent.desktops.virtual.reading import word_of


class CheckUnsupported(RuntimeError):
    """This desktop cannot answer this kind of check."""


def _scene(desktop: Any):
    oracle = getattr(desktop, "oracle", None)
    return oracle if oracle is not None and hasattr(oracle, "widgets") else None


def _words(text: str) -> list[str]:
    return [w for w in (word_of(t) for t in text.split()) if w]


def visible_words(desktop: Any) -> list[str]:
    """The virtual desktop's visible words in paint order (covered ones left out)."""
    from agent.desktops.virtual.reading import paint_scene

    _, words = paint_scene(desktop)
    return [w for w, _ in words]


def _x_active_title() -> str:
    from Xlib import X, display

    d = display.Display(os.environ.get("DISPLAY"))
    try:
        root = d.screen().root
        net_active = d.intern_atom("_NET_ACTIVE_WINDOW")
        prop = root.get_full_property(net_active, X.AnyPropertyType)
        if prop is None or not prop.value:
            return ""
        win = d.create_resource_object("window", int(prop.value[0]))
        name = win.get_full_property(d.intern_atom("_NET_WM_NAME"), 0)
        if name is not None and name.value:
            v = name.value
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        return str(win.get_wm_name() or "")
    finally:
        d.close()


def _kind_of(desktop: Any) -> str:
    try:
        return str(desktop.info().get("kind", ""))
    except Exception:
        return ""


def supports(desktop: Any, kind: str) -> bool:
    if hasattr(desktop, "probe"):
        return True
    if _scene(desktop) is not None:
        return True
    return kind == "window" and _kind_of(desktop) == "live"


def unsupported(workflow: Workflow, desktop: Any) -> str | None:
    """A clear line when some step's check cannot be answered on ``desktop``; None when all can."""
    for s in workflow.steps:
        for c in s.checks:
            if not supports(desktop, c.kind):
                return (f"step {s.index} ({s.name}) checks {c.describe()}, which the {_kind_of(desktop) or 'this'} "
                        f"desktop cannot read (it offers: "
                        f"{'window titles' if _kind_of(desktop) == 'live' else 'no probes'}); drop the check "
                        "to confirm that step by the policy's done")
    return None


def evaluate(check: Check, desktop: Any) -> tuple[bool, str]:
    """(passed, a short line saying what was found)."""
    probe = getattr(desktop, "probe", None)
    if probe is not None:
        ok, detail = probe(check.kind, check.value, equals=check.equals, contains=check.contains)
        return bool(ok), str(detail)
    scene = _scene(desktop)
    if scene is None:
        if check.kind == "window" and _kind_of(desktop) == "live":
            try:
                title = _x_active_title()
            except Exception as e:  # no X, no EWMH window manager
                return False, f"the active window's title cannot be read: {type(e).__name__}: {e}"
            ok = check.value.casefold() in title.casefold()
            return ok, f"active window {title!r}"
        raise CheckUnsupported(f"this desktop cannot answer a {check.kind} check")
    if check.kind == "text":
        want = _words(check.value)
        seen = visible_words(desktop)
        n = len(want)
        ok = n > 0 and any(seen[i:i + n] == want for i in range(len(seen) - n + 1))
        return ok, f"text {check.value!r} {'visible' if ok else 'not visible'}"
    if check.kind == "window":
        titles = [w.title for w in scene.widgets if w.visible and getattr(w, "title", "")]
        ok = any(check.value.casefold() in t.casefold() for t in titles)
        return ok, f"windows {titles!r}"
    fields = [w for w in scene.widgets if w.visible and hasattr(w, "text") and hasattr(w, "focusable")
              and w.focusable and w.name == check.value]
    if not fields:
        return False, f"no field {check.value!r} on screen"
    text = fields[0].text
    if check.equals is not None:
        ok = text == check.equals
    elif check.contains is not None:
        ok = check.contains in text
    else:
        ok = True
    return ok, f"field {check.value!r} holds {text!r}"


def evaluate_all(checks: tuple[Check, ...], desktop: Any) -> tuple[bool, str]:
    """All of ``checks`` (the first failure's line, or every line joined)."""
    lines = []
    for c in checks:
        ok, detail = evaluate(c, desktop)
        if not ok:
            return False, f"{c.describe()}: {detail}"
        lines.append(detail)
    return True, "; ".join(lines)


__all__ = ["CheckUnsupported", "evaluate", "evaluate_all", "supports", "unsupported", "visible_words"]
