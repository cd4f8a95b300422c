"""Gymnasium environments for the virtual desktop's tasks.

Each task is registered as ``dw/<task>-v0`` (for example ``dw/click-button-v0``) with
``max_episode_steps=200``: by ``import agent`` (or importing this module), see
:func:`agent.register_gym_envs`. ``gymnasium.make("dw/click-button-v0", size=(320, 240))``.

- Observation: ``Dict(frame=Box(0, 255, (H, W, 3), uint8), instruction=Text)``; the frame is
  **RGB** (Gymnasium's convention), converted from the desktop's BGRA frame.
- Action: a ``Dict`` of ``Discrete``/``Box`` parts (:func:`action_space`), turned into one
  :mod:`policies.actions` action by :func:`to_action` (``step`` also takes such an action itself):

  ``kind``: Discrete over :data:`KINDS` (click, double_click, right_click, move, drag, scroll,
  key, type, wait, done); ``point``: Box[0, 1]^2, where (normalised x, y); ``point2``:
  Box[0, 1]^2, a drag's end; ``key``: Discrete over :data:`KEYS`; ``text``: Discrete(4), type the
  k-th double-quoted string of the instruction (nothing when it has fewer); ``scroll``:
  Discrete(2), 0 up / 1 down by :data:`SCROLL_NOTCHES`. A wait is :data:`WAIT_S` seconds. Parts
  that the kind does not use are ignored.
- :class:`JsonActions` wraps an env so that its action is one action's JSON string
  (``{"type": "click", "x": 0.5, "y": 0.5}``) or dict, parsed with
  :func:`policies.actions.parse_action`: every action type and field, not just the fixed choices
  above. Invalid JSON or an invalid action is not executed: the step returns reward 0 and
  ``info["error"]`` naming the problem.
- :class:`FlatActions` and :class:`FlatObservations` make the env one that RL libraries take
  (Stable-Baselines3 takes no ``Dict`` action space and no ``Text`` observation; many others want
  one ``Box`` too): the action becomes one ``Box(-1, 1, (41,), float32)`` (:data:`FLAT_ACTION`: an argmax over a
  slot per kind, per key and per text choice; points mapped from [-1, 1] to [0, 1]; the sign of
  the scroll slot), the observation ``Dict(frame=Box, instruction=Box(0, 255, (300,), uint8))``
  (the instruction's bytes, zero-padded) or, with ``instruction=False``, the frame ``Box`` alone.
  ``FlatObservations(FlatActions(gymnasium.make("dw/click-button-v0")))`` trains with SB3's
  ``PPO("MultiInputPolicy", env)`` (``tests/test_virtual_gym.py``).
- Reward: 1.0 on the step the task succeeds, else 0.0. ``terminated`` when the episode ends: a
  decisive wrong action, ``done``, or the end of the short tail the desktop keeps running after a
  success (:data:`~agent.desktops.virtual.tasks.TAIL_S`); ``truncated`` when the virtual clock
  passes the task's time limit (or, through ``gymnasium.make``, after 200 steps).
- ``theme`` / ``font``: the look (a name, "mixed" per reset seed, or None: the classic look).
- ``reset(seed=...)`` builds a fresh desktop with that task seed (without a seed, one is drawn
  from the environment's generator). ``info`` carries ``t``, ``success``, ``reason``, the
  desktop's ``info()`` and ``action`` (the JSON of the action executed, if any);
  ``env.unwrapped.desktop.oracle`` is the scripted expert.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from agent import GYM_TASKS, register_gym_envs
from agent.desktops.virtual.desktop import VirtualDesktop
from agent.desktops.virtual.tasks import TASKS
from capture import Frame
from policies.actions import (
    MAX_TEXT,
    Action,
    ActionError,
    Click,
    Done,
    Drag,
    Key,
    Move,
    Scroll,
    Type,
    Wait,
    parse_action,
)

CHARSET = string.ascii_letters + string.digits + string.punctuation + " "
MAX_INSTRUCTION = 300
MAX_ACTION_JSON = MAX_TEXT * 6 + 200

KINDS = ("click", "double_click", "right_click", "move", "drag", "scroll", "key", "type", "wait", "done")
KEYS = (
    "enter", "tab", "escape", "backspace", "delete", "space", "up", "down", "left", "right", "home", "end",
    "pageup", "pagedown", "shift+tab", "ctrl+a", "ctrl+c", "ctrl+v", "ctrl+x", "ctrl+z", "ctrl+y", "ctrl+s",
)
TEXT_CHOICES = 4
SCROLL_NOTCHES = 3
WAIT_S = 0.5
_QUOTED = re.compile(r'"([^"]+)"')


def action_space() -> spaces.Dict:
    """The env's action space (see the module docstring)."""
    return spaces.Dict(
        {
            "kind": spaces.Discrete(len(KINDS)),
            "point": spaces.Box(0.0, 1.0, (2,), np.float32),
            "point2": spaces.Box(0.0, 1.0, (2,), np.float32),
            "key": spaces.Discrete(len(KEYS)),
            "text": spaces.Discrete(TEXT_CHOICES),
            "scroll": spaces.Discrete(2),
        }
    )


def quoted(instruction: str) -> list[str]:
    """The double-quoted strings of an instruction, in order: what the ``text`` part picks from."""
    return _QUOTED.findall(instruction)


def to_action(action: dict[str, Any], instruction: str) -> Action | None:
    """One :data:`action_space` sample as a :mod:`policies.actions` action; None for a ``type``
    whose ``text`` index has no quoted string to type (nothing is done)."""

    def pt(name: str) -> tuple[float, float]:
        x, y = np.clip(np.asarray(action[name], dtype=np.float64).reshape(2), 0.0, 1.0)
        return float(x), float(y)

    kind = KINDS[int(action["kind"])]
    if kind in ("click", "double_click", "right_click"):
        x, y = pt("point")
        return Click(x, y, button="right" if kind == "right_click" else "left", count=2 if kind == "double_click" else 1)
    if kind == "move":
        return Move(*pt("point"))
    if kind == "drag":
        return Drag(*pt("point"), *pt("point2"))
    if kind == "scroll":
        return Scroll(*pt("point"), dy=SCROLL_NOTCHES if int(action["scroll"]) else -SCROLL_NOTCHES)
    if kind == "key":
        return Key(KEYS[int(action["key"])])
    if kind == "type":
        texts = quoted(instruction)
        i = int(action["text"])
        return Type(texts[i][:MAX_TEXT]) if i < len(texts) else None
    if kind == "wait":
        return Wait(WAIT_S)
    return Done()


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
        self.action_space = action_space()
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

    def step(self, action: dict[str, Any] | Action | InvalidAction) -> tuple[dict, float, bool, bool, dict]:
        d = self.desktop
        if d is None:
            raise RuntimeError("call reset() before step()")
        if isinstance(action, InvalidAction):
            return self.apply(None, error=action.error)
        if isinstance(action, Action):
            return self.apply(action)
        try:
            parsed = to_action(action, d.instruction)
        except (ActionError, KeyError, IndexError, TypeError, ValueError) as e:
            return self.apply(None, error=f"invalid action: {e}")
        return self.apply(parsed)

    def apply(self, action: Action | None, **extra: Any) -> tuple[dict, float, bool, bool, dict]:
        """Execute one :mod:`policies.actions` action (None: nothing) and return the step's tuple."""
        d = self.desktop
        if d is None:
            raise RuntimeError("call reset() before step()")
        was = bool(d.success)
        if action is not None:
            d.apply(action)
            extra["action"] = action.to_json()
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


class InvalidAction:
    """What :class:`JsonActions` passes on for an action that failed to parse: the env executes
    nothing and reports ``error`` in ``info["error"]``."""

    def __init__(self, error: str):
        self.error = error


class JsonActions(gymnasium.ActionWrapper, gymnasium.utils.RecordConstructorArgs):
    """The action as one action's JSON (a string, or the parsed dict), any type and field of
    :mod:`policies.actions`: ``env.step('{"type": "click", "x": 0.5, "y": 0.5}')``. An invalid action
    is not executed (reward 0, ``info["error"]``). The action space is ``Text``."""

    def __init__(self, env: gymnasium.Env):
        gymnasium.utils.RecordConstructorArgs.__init__(self)  # part of env.spec (check_env rebuilds it)
        super().__init__(env)
        self.action_space = spaces.Text(MAX_ACTION_JSON, min_length=1, charset=CHARSET)

    def action(self, action: str | bytes | dict) -> Action | InvalidAction:
        try:
            return parse_action(json.loads(action) if isinstance(action, str | bytes) else action)
        except (ActionError, ValueError, TypeError) as e:
            return InvalidAction(str(e))


FLAT_ACTION: dict[str, slice] = {}
_at = 0
for _name, _n in (("kind", len(KINDS)), ("point", 2), ("point2", 2), ("key", len(KEYS)), ("text", TEXT_CHOICES),
                  ("scroll", 1)):
    FLAT_ACTION[_name] = slice(_at, _at + _n)
    _at += _n
FLAT_ACTION_SIZE = _at  # 41: kind 0-9, point 10-11, point2 12-13, key 14-35, text 36-39, scroll 40
del _at, _name, _n


class FlatActions(gymnasium.ActionWrapper, gymnasium.utils.RecordConstructorArgs):
    """The :func:`action_space` ``Dict`` as one ``Box(-1, 1, (41,), float32)``, for RL libraries
    that take no ``Dict`` action space (Stable-Baselines3) or want one ``Box``. Parts (:data:`FLAT_ACTION`):
    ``kind`` one slot per :data:`KINDS` entry (the largest wins); ``point``, ``point2`` x and y,
    mapped from [-1, 1] to [0, 1]; ``key`` one slot per :data:`KEYS` entry and ``text`` one per
    quoted string (the largest wins); ``scroll`` down where > 0, else up. Values are clipped to
    [-1, 1] (NaN as 0), so any vector a Gaussian policy emits is an action; a symmetric [-1, 1]
    box is what SB3 recommends for continuous actions.

    Not ``gymnasium.spaces.flatten_space``: its inverse (``unflatten``) needs exact one-hot parts,
    which a continuous policy never emits. :meth:`encode` is the inverse of :meth:`action`."""

    def __init__(self, env: gymnasium.Env):
        # RecordConstructorArgs: the wrapper is part of env.spec, so check_env / make can rebuild it
        gymnasium.utils.RecordConstructorArgs.__init__(self)
        gymnasium.ActionWrapper.__init__(self, env)
        self.action_space = spaces.Box(-1.0, 1.0, (FLAT_ACTION_SIZE,), np.float32)

    def action(self, action: np.ndarray) -> dict[str, Any]:
        a = np.asarray(action, dtype=np.float32)
        if a.shape != (FLAT_ACTION_SIZE,):
            raise ValueError(f"a flat action has shape ({FLAT_ACTION_SIZE},), got {a.shape}")
        a = np.clip(np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)

        def point(name: str) -> np.ndarray:
            return ((a[FLAT_ACTION[name]] + 1.0) / 2.0).astype(np.float32)

        return {
            "kind": int(np.argmax(a[FLAT_ACTION["kind"]])),
            "point": point("point"),
            "point2": point("point2"),
            "key": int(np.argmax(a[FLAT_ACTION["key"]])),
            "text": int(np.argmax(a[FLAT_ACTION["text"]])),
            "scroll": int(a[FLAT_ACTION["scroll"]][0] > 0),
        }

    @staticmethod
    def encode(action: dict[str, Any]) -> np.ndarray:
        """An :func:`action_space` sample (parts may be left out: first choice, point (0, 0)) as
        the flat vector :meth:`action` decodes back to it: chosen slots 1, the others -1."""
        flat = np.full(FLAT_ACTION_SIZE, -1.0, np.float32)
        for name in ("kind", "key", "text"):
            flat[FLAT_ACTION[name].start + int(action.get(name, 0))] = 1.0
        for name in ("point", "point2"):
            flat[FLAT_ACTION[name]] = np.asarray(action.get(name, (0.0, 0.0)), np.float32) * 2.0 - 1.0
        flat[FLAT_ACTION["scroll"]] = 1.0 if int(action.get("scroll", 0)) else -1.0
        return flat


class FlatObservations(gymnasium.ObservationWrapper, gymnasium.utils.RecordConstructorArgs):
    """The observation without its ``Text`` part, for RL libraries that take ``Box`` observations
    only (SB3's ``MultiInputPolicy`` takes a ``Dict`` of them, ``CnnPolicy`` one image ``Box``):
    ``Dict(frame=Box(0, 255, (H, W, 3), uint8), instruction=Box(0, 255, (300,), uint8))``, the
    instruction as its UTF-8 bytes zero-padded to :data:`MAX_INSTRUCTION` (:meth:`instruction_text`
    reads it back); with ``instruction=False``, the frame ``Box`` alone."""

    def __init__(self, env: gymnasium.Env, instruction: bool = True):
        gymnasium.utils.RecordConstructorArgs.__init__(self, instruction=instruction)
        gymnasium.ObservationWrapper.__init__(self, env)
        self.instruction = bool(instruction)
        frame = env.observation_space["frame"]
        if self.instruction:
            self.observation_space = spaces.Dict(
                {"frame": frame, "instruction": spaces.Box(0, 255, (MAX_INSTRUCTION,), np.uint8)}
            )
        else:
            self.observation_space = frame

    def observation(self, observation: dict[str, Any]) -> dict[str, np.ndarray] | np.ndarray:
        if not self.instruction:
            return observation["frame"]
        raw = observation["instruction"].encode("utf-8")[:MAX_INSTRUCTION]
        buf = np.zeros(MAX_INSTRUCTION, np.uint8)
        buf[: len(raw)] = np.frombuffer(raw, np.uint8)
        return {"frame": observation["frame"], "instruction": buf}

    @staticmethod
    def instruction_text(encoded: np.ndarray) -> str:
        """The instruction from its encoded ``Box`` form."""
        return bytes(np.asarray(encoded, np.uint8)).rstrip(b"\0").decode("utf-8", errors="replace")


def env_id(task: str) -> str:
    """The Gymnasium id of a task, e.g. ``dw/click-button-v0``."""
    return f"dw/{task}-v0"


def register_all() -> list[str]:
    """Register every task (idempotent); returns the ids."""
    return register_gym_envs()


ENV_IDS = register_all()

__all__ = [
    "ENV_IDS", "FLAT_ACTION", "FLAT_ACTION_SIZE", "GYM_TASKS", "KEYS", "KINDS", "FlatActions", "FlatObservations",
    "InvalidAction", "JsonActions", "VirtualDesktopEnv", "action_space", "env_id", "quoted", "register_all", "to_action",
]
