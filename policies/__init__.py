"""Policies: actions and their JSON form, the Policy protocol, built-in and learned policies."""

import agent  # noqa: F401  (before torch loads: how its CPU threads wait, agent/__init__.py)
from policies.actions import (
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
    parse_action,
)
from policies.base import Observation, Policy, PolicyError
from policies.registry import available_policies, load_policy

__all__ = [
    "ACTION_TYPES", "Action", "ActionError", "Click", "Done", "Drag", "Key", "MouseDown", "MouseUp",
    "Move", "Scroll", "Type", "Wait", "parse_action", "Observation", "Policy", "PolicyError",
    "available_policies", "load_policy",
]
