"""DAgger data: a policy drives, the scripted expert labels every state it reaches.

Shared by ``dw demos --dagger`` on the virtual desktop and on MiniWoB++ (both experts read the
live state at every step, so they can label states a policy led them to).
"""

from __future__ import annotations

import random


class ExpertTargets:
    """Wraps a demo's driver (the scripted expert, or :class:`ExpertLabels`) and records, at every
    step, the word that names what the expert's next action points at: a ``system`` event
    :data:`agent.sessions.format.EXPERT_TARGET` with ``word``, on that frame (``Task.expert_target``;
    ``None`` where no instruction word names it, so training knows the step was asked). Training
    teaches a reading model's pointer to look for that word."""

    def __init__(self, driver, recorder) -> None:
        self.driver, self.recorder, self.name = driver, recorder, driver.name

    def reset(self, instruction: str) -> None:
        self.driver.reset(instruction)

    def act(self, observation):
        from agent.sessions.format import EXPERT_TARGET

        oracle = observation.oracle
        if oracle is not None and hasattr(oracle, "expert_target"):  # None too: a step no word names
            self.recorder.add_event(observation.frame.t, "system", event=EXPERT_TARGET, word=oracle.expert_target())
        return self.driver.act(observation)


class ExpertLabels:
    """Drives with ``policy`` and records, at every step, the scripted expert's next action on that
    frame as a label: a ``system`` event :data:`agent.sessions.format.EXPERT_LABEL`. Training learns the
    labels, with the policy's own actions as the history, so the policy is taught to recover from
    the states its own mistakes lead to.

    ``beta``: the chance that a step runs the expert's action instead of the policy's (seeded per
    episode). A policy that ends episodes early (a premature Submit) then still visits, and gets
    labels for, the later states of a task. The label is recorded either way.
    Call :meth:`start` with each episode's recorder and seed."""

    def __init__(self, policy, beta: float = 0.0) -> None:
        self.policy, self.beta = policy, beta
        self.recorder = None
        self.rng = random.Random(0)
        self.name = f"{policy.name}+expert-labels"

    def start(self, recorder, seed: int) -> None:
        self.recorder = recorder
        self.rng = random.Random(f"dagger/{seed}")

    def reset(self, instruction: str) -> None:
        self.policy.reset(instruction)

    def act(self, observation):
        from agent.sessions.format import EXPERT_LABEL

        expert = observation.oracle.expert_actions() if observation.oracle is not None else []
        if expert and self.recorder is not None:
            self.recorder.add_event(observation.frame.t, "system", expert[0], event=EXPERT_LABEL)
        own = self.policy.act(observation)  # always asked: a stateful policy sees every frame
        return expert[:1] if expert and self.rng.random() < self.beta else own
