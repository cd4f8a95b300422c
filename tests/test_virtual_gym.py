"""The virtual desktop's tasks as Gymnasium environments."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import agent
import agent.desktops.virtual.gym as dwgym
from agent.desktops.virtual import task_names
from policies.actions import Click, Drag, Key, Scroll, Type


def expert_json(env) -> list[str]:
    return [json.dumps(a.to_json()) for a in env.unwrapped.desktop.oracle.expert_actions()]


@pytest.mark.parametrize("name", task_names())
def test_make_reset_and_solve_with_expert(name):
    env = dwgym.JsonActions(gymnasium.make(f"dw/{name}-v0", size=(640, 480)))
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
    assert list(agent.GYM_TASKS) == task_names()  # the cheap list in agent/__init__ is complete
    assert gymnasium.spec("dw/click-button-v0").max_episode_steps == agent.GYM_MAX_EPISODE_STEPS


@pytest.mark.parametrize("order", ["import agent; import gymnasium", "import gymnasium; import agent"])
def test_import_agent_registers_cheaply(order):
    code = (
        f"import sys; {order}; ok = 'dw/click-button-v0' in gymnasium.registry; "
        "heavy = [m for m in ('torch', 'agent.desktops.virtual', 'PIL') if m in sys.modules]; "
        "env = gymnasium.make('dw/click-button-v0', size=(160, 120)); env.reset(seed=0); print(ok, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True []"
    # import agent alone does not import gymnasium
    out = subprocess.run([sys.executable, "-c", "import sys, agent; print('gymnasium' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_seeded_reset_is_deterministic():
    env = gymnasium.make("dw/click-button-v0", size=(640, 480))
    a, _ = env.reset(seed=3)
    b, _ = env.reset(seed=3)
    c, _ = env.reset(seed=4)
    assert np.array_equal(a["frame"], b["frame"]) and a["instruction"] == b["instruction"]
    assert not np.array_equal(a["frame"], c["frame"])
    env.reset()  # no seed: drawn from the env's generator


def test_invalid_wrong_and_timeout():
    env = dwgym.JsonActions(gymnasium.make("dw/click-button-v0", size=(640, 480)))
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
    # the wrapper records its arguments: check_env rebuilds the wrapped env from its spec
    check_env(dwgym.JsonActions(gymnasium.make("dw/click-button-v0", size=(320, 240))), skip_render_check=True)


def test_render_and_env_checker():
    env = gymnasium.make("dw/close-dialog-v0", size=(320, 240), render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (240, 320, 3)
    check_env(env.unwrapped, skip_render_check=True)


def test_env_checker_on_made_env_and_spaces():
    env = gymnasium.make("dw/click-button-v0", size=(160, 120))
    assert isinstance(env.action_space, gymnasium.spaces.Dict)
    for part in env.action_space.spaces.values():
        assert isinstance(part, gymnasium.spaces.Discrete | gymnasium.spaces.Box)
    check_env(env.unwrapped, skip_render_check=True)
    check_env(dwgym.VirtualDesktopEnv("enter-text", size=(320, 240)), skip_render_check=True)


def test_random_rollout_like_an_rl_library():
    env = gymnasium.make("dw/select-radio-v0", size=(160, 120))
    env.action_space.seed(0)
    obs, info = env.reset(seed=0)
    steps = episodes = 0
    while steps < 300:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and reward in (0.0, 1.0) and "error" not in info
        steps += 1
        if terminated or truncated:
            episodes += 1
            obs, info = env.reset()
    assert episodes >= 1


def test_max_episode_steps_truncates():
    env = gymnasium.make("dw/click-button-v0", size=(160, 120), max_episode_steps=3)
    env.reset(seed=0)
    move = {"kind": dwgym.KINDS.index("move"), "point": np.array([0.0, 0.0], np.float32), "point2": np.zeros(2, np.float32),
            "key": 0, "text": 0, "scroll": 0}
    results = [env.step(move) for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True] and not any(r[2] for r in results)


def test_to_action_and_expert_through_the_dict_space():
    def act(kind, point=(0.25, 0.75), point2=(0.5, 0.5), key=0, text=0, scroll=0):
        return {"kind": dwgym.KINDS.index(kind), "point": np.array(point, np.float32),
                "point2": np.array(point2, np.float32), "key": key, "text": text, "scroll": scroll}

    ins = 'Fill in Street "summit", City "harbor", then click Submit.'
    assert dwgym.to_action(act("click"), ins) == Click(0.25, 0.75)
    assert dwgym.to_action(act("double_click"), ins) == Click(0.25, 0.75, count=2)
    assert dwgym.to_action(act("right_click"), ins) == Click(0.25, 0.75, button="right")
    assert dwgym.to_action(act("drag"), ins) == Drag(0.25, 0.75, 0.5, 0.5)
    assert dwgym.to_action(act("scroll", scroll=1), ins) == Scroll(0.25, 0.75, dy=dwgym.SCROLL_NOTCHES)
    assert dwgym.to_action(act("key", key=dwgym.KEYS.index("ctrl+z")), ins) == Key("ctrl+z")
    assert dwgym.to_action(act("type", text=1), ins) == Type("harbor")
    assert dwgym.to_action(act("type", text=3), ins) is None

    env = gymnasium.make("dw/click-button-v0", size=(320, 240))
    env.reset(seed=2)
    (a,) = env.unwrapped.desktop.oracle.expert_actions()
    _, reward, terminated, _, info = env.step(act("click", point=(a.x, a.y)))
    assert reward == 1.0 and info["success"] is True


# --- FlatActions / FlatObservations: the spaces RL libraries take ---------------------------------

def flat_env(task="click-button", instruction=True):
    return dwgym.FlatObservations(dwgym.FlatActions(gymnasium.make(f"dw/{task}-v0", size=(160, 120))),
                                  instruction=instruction)


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")  # wrapped on purpose
@pytest.mark.parametrize("instruction", [True, False])
def test_flat_wrappers_pass_the_env_checkers(instruction):
    env = flat_env(instruction=instruction)
    assert env.action_space == gymnasium.spaces.Box(-1.0, 1.0, (41,), np.float32)
    if instruction:
        assert set(env.observation_space.spaces) == {"frame", "instruction"}
        assert all(isinstance(s, gymnasium.spaces.Box) for s in env.observation_space.spaces.values())
    else:
        assert env.observation_space == gymnasium.spaces.Box(0, 255, (120, 160, 3), np.uint8)
    check_env(env, skip_render_check=True)  # rebuilt from env.spec: the wrappers record their arguments
    try:
        from stable_baselines3.common.env_checker import check_env as sb3_check_env
    except ImportError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3 warns about spaces it handles badly (asymmetric boxes, ...)
        sb3_check_env(env)


def test_flat_random_rollout_50_steps():
    env = flat_env("select-radio")
    env.action_space.seed(0)
    obs, info = env.reset(seed=0)
    assert dwgym.FlatObservations.instruction_text(obs["instruction"]) == env.unwrapped.desktop.instruction
    for _ in range(50):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and reward in (0.0, 1.0) and "error" not in info
        if terminated or truncated:
            obs, info = env.reset()


def test_flat_action_decodes_to_the_expected_click():
    L = dwgym.FLAT_ACTION
    flat = np.full(41, -1.0, np.float32)
    flat[L["kind"].start + dwgym.KINDS.index("click")] = 0.3  # the largest kind slot wins
    flat[L["point"]] = (-0.5, 0.5)  # [-1, 1] -> [0, 1]: (0.25, 0.75)
    env = dwgym.FlatActions(gymnasium.make("dw/click-button-v0", size=(320, 240)))
    decoded = env.action(flat)
    assert dwgym.to_action(decoded, "") == Click(0.25, 0.75)
    env.reset(seed=2)
    _, _, _, _, info = env.step(flat)
    assert info["action"] == Click(0.25, 0.75).to_json()

    # encode is action's inverse; the expert's click through the flat space solves the task
    env.reset(seed=2)
    (a,) = env.unwrapped.desktop.oracle.expert_actions()
    flat = dwgym.FlatActions.encode({"kind": dwgym.KINDS.index("click"), "point": (a.x, a.y)})
    c = dwgym.to_action(env.action(flat), "")
    assert isinstance(c, Click) and (c.x, c.y) == pytest.approx((a.x, a.y)) and c.count == 1
    _, reward, terminated, _, info = env.step(flat)
    assert reward == 1.0 and info["success"] is True

    ins = 'Fill in Street "summit", City "harbor", then click Submit.'
    for part in ({"kind": dwgym.KINDS.index("key"), "key": dwgym.KEYS.index("ctrl+z")},
                 {"kind": dwgym.KINDS.index("type"), "text": 1},
                 {"kind": dwgym.KINDS.index("scroll"), "point": (0.5, 0.25), "scroll": 1},
                 {"kind": dwgym.KINDS.index("drag"), "point": (0.0, 1.0), "point2": (1.0, 0.5)}):
        full = {"key": 0, "text": 0, "scroll": 0, "point": (0.0, 0.0), "point2": (0.0, 0.0), **part}
        assert dwgym.to_action(env.action(dwgym.FlatActions.encode(part)), ins) == dwgym.to_action(full, ins)
    # out of range and NaN are clipped (a Gaussian policy's raw output is still an action); a wrong shape is not
    wild = np.full(41, np.nan, np.float32)
    wild[L["point"]] = (7.0, -7.0)
    assert dwgym.to_action(env.action(wild), "") == Click(1.0, 0.0)
    with pytest.raises(ValueError, match=r"shape \(41,\)"):
        env.action(np.zeros(40, np.float32))


@pytest.mark.slow
def test_stable_baselines3_ppo_learns_on_the_flat_env():
    sb3 = pytest.importorskip("stable_baselines3", reason="stable-baselines3 is not installed (the test extra)")
    env = flat_env()
    model = sb3.PPO("MultiInputPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)
    assert model.num_timesteps == 64
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action)
    env.step(action)
