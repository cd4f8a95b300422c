"""MiniWoB++ (Farama's ``miniwob`` package) in Chromium, behind the Desktop protocol.

``open_miniwob(task, seed, mode)`` gives a desktop in ``headless`` mode (MiniWoB screenshots and
MiniWoB's action API) or ``desktop`` mode (a Chromium window on the X display, captured with mss
and driven with pyautogui through the executor). Scripted DOM experts (58 of Pix2Act's 59 tasks) make demos;
:mod:`agent.desktops.miniwob.evaluate` runs the success table. See ``docs/miniwob.md``.
"""

from agent.desktops.miniwob.browser import (
           MODES,
           MiniWoBUnavailable,
           check_available,
           find_browser,
           task_names,
)
from agent.desktops.miniwob.desktop import HeadlessMiniWoB, LiveMiniWoB, MiniWoBBrowser, open_miniwob
from agent.desktops.miniwob.experts import EXPERT_TASKS

__all__ = ["EXPERT_TASKS", "MODES", "HeadlessMiniWoB", "LiveMiniWoB", "MiniWoBBrowser", "MiniWoBUnavailable",
           "check_available", "find_browser", "open_miniwob", "task_names"]
