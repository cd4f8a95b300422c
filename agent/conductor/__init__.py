"""System 2 above the fast policy: workflows, conductors, and the director that runs them.

- :mod:`~agent.conductor.workflow`: the workflow file (YAML steps, checks, timeouts, retries,
  ``{variables}`` from a CSV of rows);
- :mod:`~agent.conductor.base`: the conductor interface ``next_step(goal, frames, history)`` and
  the scripted workflow conductor; :mod:`~agent.conductor.models`: a local VLM (``hf-vlm``) and
  any OpenAI-compatible endpoint;
- :mod:`~agent.conductor.director`: runs decisions as steps inside :class:`agent.loop.Agent`;
- :mod:`~agent.conductor.checks`: step checks against what a desktop exposes;
- :mod:`~agent.conductor.scene`: a virtual scene whose state persists across steps (a form);
- :mod:`~agent.conductor.run`: one run per row, the report ``dw run`` / ``dw eval`` print.
"""

from agent.conductor.base import (
           Conductor,
           ConductorError,
           Finish,
           Goal,
           Instruction,
           StepRecord,
           WorkflowConductor,
)
from agent.conductor.workflow import Check, Step, Workflow, WorkflowError, load_rows, load_workflow

__all__ = ["Check", "Conductor", "ConductorError", "Finish", "Goal", "Instruction", "Step", "StepRecord", "Workflow",
           "WorkflowConductor", "WorkflowError", "load_rows", "load_workflow"]
