"""The virtual desktop's tasks as Gymnasium environments."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import agent.desktops.virtual.gym as dwgym
from agent.desktops.virtual import task_names


def expert_json(env) -> list[str]:
    return [json.dumps(a.to_json()) for a in env.unwrapped.desktop.oracle.expert_actions()]


@pytest.mark.parametrize("name", task_names())
def test_make_reset_and_solve_with_expert(name):
    env = gymnasium.make(f"dw/{name}-v0", size=(640, 480))
    obs, info = env.reset(seed=5)
    assert obs["frame"].shape == (480, 640, 3) and obs["frame"].dtype == np.uint8
    assert env.observation_space.contains(obs), obs["instruction"]
    assert obs["instruction"] == env.unwrapped.desktop.instruction and obs["instruction"]
    total, terminated, truncated = 0.0, False, False
    for _ in range(50):
        for a in expert_json(env):
            obs, reward, terminated, truncated, info = env.step(a)
            total += reward
        if terminated or truncated:
            break
    assert terminated and not truncated and total == 1.0 and info["success"] is True
    env.close()


def test_ids_registered():
    assert dwgym.ENV_IDS == [f"dw/{n}-v0" for n in task_names()]
    for eid in dwgym.ENV_IDS:
        assert eid in gymnasium.registry
    assert dwgym.register_all() == dwgym.ENV_IDS  # idempotent


def test_seeded_reset_is_deterministic():
    env = gymnasium.make("dw/click-button-v0", size=(640, 480))
    a, _ = env.reset(seed=3)
    b, _ = env.reset(seed=3)
    c, _ = env.reset(seed=4)
    assert np.array_equal(a["frame"], b["frame"]) and a["instruction"] == b["instruction"]
    assert not np.array_equal(a["frame"], c["frame"])
    env.reset()  # no seed: drawn from the env's generator


def test_invalid_wrong_and_timeout():
    env = gymnasium.make("dw/click-button-v0", size=(640, 480))
    env.reset(seed=1)
    for bad in ("not json", '{"type": "teleport"}', '{"type": "click", "x": 2, "y": 0.5}', "[]"):
        _, reward, terminated, truncated, info = env.step(bad)
        assert reward == 0.0 and not terminated and not truncated and info["error"]
    task = env.unwrapped.desktop.oracle
    wrong = next(b for b in task.buttons if b is not task.target)
    x, y = task.norm(*wrong.rect.center)
    _, reward, terminated, truncated, info = env.step(json.dumps({"type": "click", "x": x, "y": y}))
    assert reward == 0.0 and terminated and not truncated and info["success"] is False

    env.reset(seed=1)
    _, reward, terminated, truncated, info = env.step('{"type": "wait", "seconds": 30}')
    assert truncated and not terminated and reward == 0.0 and info["reason"] == "timeout"


def test_render_and_env_checker():
    env = gymnasium.make("dw/close-dialog-v0", size=(320, 240), render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (240, 320, 3)
    check_env(env.unwrapped, skip_render_check=True)
