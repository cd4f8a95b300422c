"""Policies: actions and their JSON form, the Policy protocol, built-in and learned policies."""

import os

# torch's CPU threads (GNU OpenMP) spin for 300,000 rounds after each parallel operation before they
# sleep, and took the cores from the ONNX Runtime step that follows a torch read (about 2 ms of a
# 25 ms step on 2 cores). OpenMP reads this once, when torch loads: set before anything here imports
# torch; a value the user set stays.
os.environ.setdefault("GOMP_SPINCOUNT", "30000")

from policies.actions import (  # noqa: E402
    ACTION_TYPES,
    Action,
    ActionError,
    Click,
    Done,
    Drag,
    Key,
    MouseDown,
    MouseUp,
    Move,
    Scroll,
    Type,
    Wait,
    action_json_schema,
    parse_action,
)
from policies.base import Observation, Policy, PolicyError  # noqa: E402
from policies.registry import available_policies, load_policy  # noqa: E402

__all__ = [
    "ACTION_TYPES", "Action", "ActionError", "Click", "Done", "Drag", "Key", "MouseDown", "MouseUp",
    "Move", "Scroll", "Type", "Wait", "action_json_schema", "parse_action", "Observation", "Policy", "PolicyError",
    "available_policies", "load_policy",
]
