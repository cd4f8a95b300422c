"""Behaviour cloning on a couple of demo sessions (CPU, a few steps), and the bundled checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from agent.commands.demos import demo_specs, record_demo
from policies.pixel import CHECKPOINTS
from policies.train import TrainConfig, train

SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "stem_channels": 8, "max_glimpses": 8}


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    for spec in demo_specs(["click-button", "enter-text"], 2, [(640, 480, 1.0)], seed=0):
        record_demo(spec, str(out))
    return out


def _run(demos, out, steps=12, seed=0):
    tc = TrainConfig(size="pixel-tiny", epochs=100, batch_size=8, lr=3e-3, seed=seed, max_steps=steps,
                     val_fraction=0.0, overrides=SMALL, warmup_steps=2)
    return train([demos], out, tc, cache_dir=out.parent / "cache", progress=False, log=lambda s: None)


def test_training_reduces_loss_and_is_deterministic(demos, tmp_path):
    a = _run(demos, tmp_path / "a")
    b = _run(demos, tmp_path / "b")
    la = [h["train_loss"] for h in a["history"]]
    assert la[-1] < la[0]
    assert la == [h["train_loss"] for h in b["history"]]
    from safetensors.torch import load_file

    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert json.loads((tmp_path / "a" / "training.json").read_text())["train_samples"] > 0


def test_trained_checkpoint_loads_as_a_policy(demos, tmp_path):
    from agent.evaluate import episode_specs, run_episodes

    _run(demos, tmp_path / "m", steps=2)
    res = run_episodes(episode_specs(["click-button"], 1, [(640, 480, 1.0)]), str(tmp_path / "m"), max_steps=3)
    assert res[0]["steps"] >= 1 and res[0]["errors"] == 0


@pytest.mark.slow
@pytest.mark.skipif(not (CHECKPOINTS / "pixel-small" / "config.json").is_file(), reason="no bundled pixel-small")
def test_bundled_pixel_small_runs_unseen_episodes():
    from agent.evaluate import episode_specs, run_episodes, summarise

    res = run_episodes(episode_specs(["click-button", "close-dialog"], 2, [(640, 480, 1.0)]), "pixel-small")
    s = summarise(res)
    assert s["episodes"] == 4
    # Known shortfall (see the issue note): the bundled checkpoint is far below the 90% goal.
    assert all(r["errors"] == 0 for r in res)
