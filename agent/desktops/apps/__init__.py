"""Real GUI apps (Tk and GTK 3) on a private Xvfb, driven through the live path: ``dw eval --suite apps``.

:mod:`~agent.desktops.apps.tasks` holds the tasks (seeded episodes, success read from the app, the
scripted experts), :mod:`~agent.desktops.apps.desktop` the world (Xvfb, session bus, interpreters) and
the per-episode desktop, :mod:`~agent.desktops.apps.evaluate` the success table and demos. The task
apps (``tk_app.py``, ``gtk_app.py``) and the AT-SPI reader (``atspi_reader.py``) run as subprocesses.
See ``docs/apps.md``.
"""

from agent.desktops.apps.desktop import AppDesktop, AppUnavailable, AppWorld, check_task_available
from agent.desktops.apps.tasks import HELD_OUT, TASKS, TOOLKITS, AppTask

__all__ = ["HELD_OUT", "TASKS", "TOOLKITS", "AppDesktop", "AppTask", "AppUnavailable", "AppWorld", "check_task_available"]
