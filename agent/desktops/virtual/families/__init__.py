"""The virtual desktop's task families beyond the 7 classic ones (:data:`FAMILIES`, in a stable order).

Each module groups related families; each family subclasses :class:`~agent.desktops.virtual.tasks.Task`
(seeded ``build``, ``instruction`` in several phrasings, a success check, ``expert``). ``TASKS``
in :mod:`agent.desktops.virtual.tasks` lists the classic families and then these.
"""

from agent.desktops.virtual.families.flows import FLOWS
from agent.desktops.virtual.families.forms import FORMS
from agent.desktops.virtual.families.lists import LISTS

FAMILIES = (*FORMS, *LISTS, *FLOWS)

__all__ = ["FAMILIES"]
