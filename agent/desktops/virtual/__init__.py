"""The built-in virtual desktop and its task suite.

A deterministic desktop rendered in-process (numpy + Pillow, no X server) at any size and
HiDPI scale, running one seeded task such as ``click-button`` or ``drag-slider``. It
implements :class:`agent.desktops.Desktop`; its ``oracle`` (the task) gives the scripted
expert's next actions. ``import agent`` (:mod:`agent.desktops.virtual.gym`) registers each task as a
Gymnasium environment ``dw/<task>-v0``.
"""

from agent.desktops.virtual.desktop import VirtualDesktop, desktop_from_info
from agent.desktops.virtual.tasks import TASKS, Task, task_names

__all__ = ["TASKS", "Task", "VirtualDesktop", "desktop_from_info", "task_names"]
