"""One virtual scene that keeps its state across a workflow's steps: a form of named fields.

The virtual desktop's families each end their episode at an outcome (a form family checks every
field at Submit and finishes). A workflow needs the opposite: one screen that persists while a
conductor hands the fast policy one instruction per field. :class:`FormScene` is that screen
(a window of labelled text fields and a commit button; pressing the button shows
``Saved <first field's text>`` under it); it never decides an outcome or times out: the
workflow's checks judge each step.

Its expert (for the ``scripted`` policy) follows the instruction in force, which the loop hands
it through :meth:`SceneDesktop.on_instruction`: ``Type "X" into the "F" field`` fills F with X,
``Click the "B" button`` clicks B; anything else it does not understand, and it does nothing.

A workflow names its scene in ``desktop:``::

    desktop: {scene: form, title: New Contact, fields: [Name, City, Email, Company], button: Submit}
"""

from __future__ import annotations

import math
import re
from typing import Any

from agent.desktops.virtual.desktop import VirtualDesktop
from agent.desktops.virtual.render import Rect
from agent.desktops.virtual.tasks import Task
from agent.desktops.virtual.themes import CLASSIC, Look
from agent.desktops.virtual.widgets import Label, TextField
from agent.errors import UserError
from capture import Screen
from policies.actions import Action, Done

SCENES = ("form",)
BASE_TASK = "fill-form"  # the family whose look (theme, font) a form scene takes for the same seed
KIND = "virtual-scene"
_TYPE = re.compile(r'\b(?:type|enter|write)\s+"([^"]*)"\s+(?:into|in)\s+the\s+"([^"]+)"\s+field', re.I)
_CLICK = re.compile(r'\b(?:click|press)\s+(?:the\s+)?"([^"]+)"', re.I)


def scene_spec(spec: dict | None) -> dict:
    """A workflow's ``desktop:`` mapping, checked, with defaults filled."""
    spec = dict(spec or {})
    scene = spec.get("scene", "form")
    if scene not in SCENES:
        raise UserError(f"unknown virtual scene {scene!r}; available: {', '.join(SCENES)}")
    fields = spec.get("fields") or ["Name", "City", "Email", "Company"]
    if not isinstance(fields, list) or not all(isinstance(f, str) and f.strip() for f in fields) or len(fields) > 8:
        raise UserError("desktop.fields must be a list of 1-8 field names")
    unknown = sorted(set(spec) - {"scene", "title", "fields", "button"})
    if unknown:
        raise UserError(f"desktop: unknown key {unknown[0]!r}; a form scene has scene, title, fields, button")
    return {"scene": scene, "title": str(spec.get("title") or "Form"), "fields": [f.strip() for f in fields],
            "button": str(spec.get("button") or "Submit")}


class FormScene(Task):
    """A window of labelled text fields and a commit button; state persists, no outcome."""

    name = "workflow-form"
    time_limit = math.inf

    def __init__(self, seed: int, screen: Screen, human_like: bool = False, look: Look = CLASSIC,
                 spec: dict | None = None):
        self.spec = scene_spec(spec)
        self.goal_instruction = ""
        self.submitted = 0
        super().__init__(seed, screen, human_like, look)

    def build(self) -> None:
        r, spec = self.rng, self.spec
        n = len(spec["fields"])
        _, area = self.window(spec["title"], r.uniform(420, 560), 150 + 44 * n)
        self.fields = self.field_rows(area, spec["fields"], min(240.0, area.w - 110), math.inf)
        self.commit = self.add_button(area.right - 96, area.bottom - 64, spec["button"], "primary")
        self.status = Label(Rect(area.x, area.bottom - 24, area.w, 22), text="", color="muted")
        self.widgets.append(self.status)
        self.instruction = ""

    def on_key(self, combo: str) -> bool:
        return combo in ("enter", "return") and isinstance(self.focus, TextField)  # a field's Enter: nothing

    def on_activate(self, w, count: int) -> None:
        if w is self.commit:
            self.submitted += 1
            first = self.fields[0].text if self.fields else ""
            self.status.text = f"Saved {first}".strip()

    # -- the expert follows the instruction in force ---------------------------------------------
    def expert_actions(self) -> list[Action]:
        text = self.goal_instruction
        m = _TYPE.search(text)
        if m:
            want, name = m.group(1), m.group(2)
            f = next((f for f in self.fields if f.visible and f.name == name and f in self.widgets), None)
            if f is None:
                return []  # nothing on screen fits the instruction: do nothing
            return self.fill(f, want) or [Done()]
        m = _CLICK.search(text)
        if m:
            b = next((w for w in self.widgets if w.visible and getattr(w, "label", None) == m.group(1)
                      and w.interactive), None)
            if b is None:
                return []
            if b is self.commit and self.submitted:
                return [Done()]
            return self.click(b)
        return []

    def target_word(self) -> str | None:
        return None


class SceneDesktop(VirtualDesktop):
    """The virtual desktop running a :class:`FormScene` (built from a workflow's ``desktop:``)."""

    def __init__(self, spec: dict | None = None, seed: int = 0, size: tuple[int, int] = (1280, 720),
                 scale: float = 1.0, fps: float = 10.0, human_like: bool = False, theme: str | None = None,
                 font: str | None = None, font_size: float | None = None):
        self.spec = scene_spec(spec)
        # The desktop proper (clock, geometry, look, canvas) is the virtual desktop's own, built
        # around a form family's episode; the scene then takes that episode's place.
        super().__init__(BASE_TASK, seed=seed, size=size, scale=scale, fps=fps, human_like=human_like, theme=theme,
                         font=font, font_size=font_size)
        self.task_name = FormScene.name
        self._task = FormScene(self.seed, self.screen, self.human_like, self.look, self.spec)
        if hasattr(self, "tail"):
            self._task.tail = self.tail
        lx, ly = self._task.cursor
        self._px = self._clamp_px(math.floor(lx * self.screen.scale), math.floor(ly * self.screen.scale))
        self._task.pointer_move(*self._logical())

    def on_instruction(self, text: str) -> None:
        """The instruction the worker now follows (the scene's expert acts on it)."""
        self._task.goal_instruction = text

    def remove_field(self, name: str) -> None:
        """Take the named field (and its label) off the screen: a fault for tests."""
        t = self._task
        t.widgets[:] = [w for w in t.widgets
                        if getattr(w, "name", None) != name and getattr(w, "text", None) != f"{name}:"]
        t.fields = [f for f in t.fields if f.name != name]

    def info(self) -> dict[str, Any]:
        return {**super().info(), "kind": KIND, "scene": self.spec}


def scene_from_info(info: dict[str, Any]) -> SceneDesktop:
    """Rebuild a scene desktop from its :meth:`SceneDesktop.info` (for replays)."""
    size = info.get("size", [1280, 720])
    return SceneDesktop(info.get("scene"), seed=int(info.get("seed", 0)), size=(int(size[0]), int(size[1])),
                        scale=float(info.get("scale", 1.0)), fps=float(info.get("fps", 10.0)),
                        human_like=bool(info.get("human_like", False)), theme=info.get("theme"),
                        font=info.get("font"), font_size=info.get("font_size"))


__all__ = ["FormScene", "SceneDesktop", "scene_from_info", "scene_spec"]
