"""Gymnasium environments for the virtual desktop's tasks; importing this module registers them.

Each task is registered as ``dw/<task>-v0`` (for example ``dw/click-button-v0``).

- Observation: ``Dict(frame=Box(0, 255, (H, W, 3), uint8), instruction=Text)``; the frame is
  **RGB** (Gymnasium's convention), converted from the desktop's BGRA frame.
- Action: a ``Text`` space carrying one action's JSON (``{"type": "click", "x": 0.5, "y": 0.5}``),
  parsed with :func:`policies.actions.parse_action`. Invalid JSON or an invalid action is not
  executed: the step returns reward 0 and ``info["error"]`` naming the problem.
- Reward: 1.0 on the step the task succeeds, else 0.0. ``terminated`` when the episode ends: a
  decisive wrong action, ``done``, or the end of the short tail the desktop keeps running after a
  success (:data:`~agent.desktops.virtual.tasks.TAIL_S`); ``truncated`` when the virtual clock
  passes the task's time limit.
- ``theme`` / ``font``: the look (a name, "mixed" per reset seed, or None: the classic look).
- ``reset(seed=...)`` builds a fresh desktop with that task seed (without a seed, one is drawn
  from the environment's generator). ``info`` carries ``t``, ``success``, ``reason`` and the
  desktop's ``info()``; ``env.unwrapped.desktop.oracle`` is the scripted expert.
"""

from __future__ import annotations

import json
import string
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from agent.desktops.virtual.desktop import VirtualDesktop
from agent.desktops.virtual.tasks import TASKS
from capture import Frame
from policies.actions import MAX_TEXT, ActionError, parse_action

CHARSET = string.ascii_letters + string.digits + string.punctuation + " "
MAX_INSTRUCTION = 300
MAX_ACTION_JSON = MAX_TEXT * 6 + 200


class VirtualDesktopEnv(gymnasium.Env):
    """One virtual-desktop task as a Gymnasium environment (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str,
        size: tuple[int, int] = (640, 480),
        scale: float = 1.0,
        fps: float = 10.0,
        human_like: bool = False,
        render_mode: str | None = None,
        theme: str | None = None,
        font: str | None = None,
    ):
        if task not in TASKS:
            raise ValueError(f"unknown virtual task {task!r}; expected one of {', '.join(TASKS)}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.task = task
        self.size = (int(size[0]), int(size[1]))
        self.scale = float(scale)
        self.fps = float(fps)
        self.human_like = bool(human_like)
        self.theme, self.font = theme, font
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.fps}
        w, h = self.size
        self.observation_space = spaces.Dict(
            {
                "frame": spaces.Box(0, 255, (h, w, 3), np.uint8),
                "instruction": spaces.Text(MAX_INSTRUCTION, min_length=0, charset=CHARSET),
            }
        )
        self.action_space = spaces.Text(MAX_ACTION_JSON, min_length=1, charset=CHARSET)
        self.desktop: VirtualDesktop | None = None
        self._frame: Frame | None = None

    def _obs(self) -> dict[str, Any]:
        assert self.desktop is not None and self._frame is not None
        return {"frame": self._frame.rgb(), "instruction": self.desktop.instruction}

    def _info(self, **extra: Any) -> dict[str, Any]:
        d = self.desktop
        assert d is not None
        return {"t": d.now(), "success": d.success, "reason": d.reason, "desktop": d.info(), **extra}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        task_seed = int(seed) if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
        if self.desktop is not None:
            self.desktop.close()
        self.desktop = VirtualDesktop(
            self.task, seed=task_seed, size=self.size, scale=self.scale, fps=self.fps, human_like=self.human_like,
            theme=self.theme, font=self.font,
        )
        self._frame = self.desktop.observe()
        return self._obs(), self._info()

    def step(self, action: str) -> tuple[dict, float, bool, bool, dict]:
        d = self.desktop
        if d is None:
            raise RuntimeError("call reset() before step()")
        was = bool(d.success)
        extra: dict[str, Any] = {}
        try:
            obj = json.loads(action) if isinstance(action, str | bytes) else action
            parsed = parse_action(obj)
        except (ActionError, ValueError, TypeError) as e:
            extra["error"] = str(e)
        else:
            d.apply(parsed)
        self._frame = d.observe()
        reward = 1.0 if (d.success and not was) else 0.0
        truncated = d.finished and d.reason == "timeout"
        terminated = d.finished and not truncated
        return self._obs(), reward, terminated, truncated, self._info(**extra)

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array" and self._frame is not None:
            return self._frame.rgb()
        return None

    def close(self) -> None:
        if self.desktop is not None:
            self.desktop.close()
            self.desktop = None


def env_id(task: str) -> str:
    """The Gymnasium id of a task, e.g. ``dw/click-button-v0``."""
    return f"dw/{task}-v0"


def register_all() -> list[str]:
    """Register every task (idempotent); returns the ids."""
    ids = []
    for name in TASKS:
        eid = env_id(name)
        if eid not in gymnasium.registry:
            gymnasium.register(id=eid, entry_point="agent.desktops.virtual.gym:VirtualDesktopEnv", kwargs={"task": name})
        ids.append(eid)
    return ids


ENV_IDS = register_all()

__all__ = ["ENV_IDS", "VirtualDesktopEnv", "env_id", "register_all"]
