"""Named MiniWoB++ task lists for ``--tasks`` (``all``/``experts``, ``pix2act59``) and, per task,
whether a scripted expert covers it and why not where none does.

``pix2act59`` is Pix2Act's evaluation set (Shaw et al. 2023), copied from its
``pix2act/tasks/miniwob/eval/tasks.txt`` (github.com/google-deepmind/pix2act, commit fedaad6d).
One of its names, ``drag-item``, is a task of OpenAI's original MiniWoB that Farama's ``miniwob``
package does not ship; it is kept in the list (so reports name all 59) and reported as unavailable.
"""

from __future__ import annotations

PIX2ACT59: tuple[str, ...] = (
    "bisect-angle", "choose-date-nodelay", "circle-center", "click-button", "click-button-sequence",
    "click-checkboxes", "click-checkboxes-large", "click-checkboxes-soft", "click-checkboxes-transfer",
    "click-collapsible-2-nodelay", "click-collapsible-nodelay", "click-color", "click-dialog", "click-dialog-2",
    "click-link", "click-option", "click-pie-nodelay", "click-shades", "click-shape", "click-tab", "click-tab-2",
    "click-tab-2-easy", "click-tab-2-hard", "click-tab-2-medium", "click-test", "click-test-2",
    "click-test-transfer", "click-widget", "count-shape", "count-sides", "drag-box", "drag-item", "drag-items",
    "drag-items-grid", "drag-shapes", "drag-sort-numbers", "email-inbox-delete", "email-inbox-important",
    "enter-date", "enter-text-2", "enter-time", "find-midpoint", "grid-coordinate", "identify-shape",
    "navigate-tree", "number-checkboxes", "resize-textarea", "right-angle", "simple-algebra", "simple-arithmetic",
    "text-transform", "tic-tac-toe", "unicode-test", "use-autocomplete-nodelay", "use-colorwheel",
    "use-colorwheel-2", "use-slider", "use-slider-2", "visual-addition",
)

# The 17 tasks the bundled checkpoints were trained on (what ``--tasks all`` has always meant).
CLASSIC17: tuple[str, ...] = (
    "click-button", "click-button-sequence", "click-checkboxes", "click-collapsible", "click-dialog",
    "click-dialog-2", "click-link", "click-option", "click-tab", "click-test", "click-test-2", "click-widget",
    "enter-password", "enter-text", "focus-text", "focus-text-2", "login-user",
)

TASK_LISTS: dict[str, tuple[str, ...]] = {"all": CLASSIC17, "experts": CLASSIC17, "pix2act59": PIX2ACT59}

# Tasks that no scripted expert covers, with the reason.
NO_EXPERT: dict[str, str] = {
    "drag-item": "not in the installed miniwob package (a task of OpenAI's original MiniWoB that Farama's "
                 "MiniWoB++ dropped), so it cannot run here",
}


def coverage(task: str) -> dict:
    """``{"expert": <task> | None, "reason": str | None}`` for a report."""
    from agent.desktops.miniwob.experts import EXPERTS

    if task in EXPERTS:
        return {"expert": task, "reason": None}
    return {"expert": None, "reason": NO_EXPERT.get(task, "no scripted expert written for this task")}
