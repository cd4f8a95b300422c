"""Behaviour cloning on a couple of demo sessions (CPU, a few steps), and the bundled checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agent.sessions.demos import demo_specs, record_demo
from policies.registry import bundled_checkpoint
from policies.train import TrainConfig, TrainError, train

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
    from agent.desktops.virtual.evaluate import episode_specs, run_episodes

    _run(demos, tmp_path / "m", steps=2)
    res = run_episodes(episode_specs(["click-button"], 1, [(640, 480, 1.0)]), str(tmp_path / "m"), max_steps=3)
    assert res[0]["steps"] >= 1 and res[0]["errors"] == 0


def test_fine_tuning_starts_from_the_init_checkpoint(demos, tmp_path):
    from safetensors.torch import load_file

    from policies.base import PolicyError

    _run(demos, tmp_path / "base", steps=2)
    tc = TrainConfig(epochs=1, batch_size=8, lr=0.0, max_steps=1, val_fraction=0.0, warmup_steps=1,
                     weight_decay=0.0, init=str(tmp_path / "base"))
    out = train([demos], tmp_path / "ft", tc, cache_dir=tmp_path / "cache", progress=False, log=lambda s: None)
    assert out["init"] == str(tmp_path / "base") and out["steps"] == 1
    a, b = load_file(str(tmp_path / "base" / "model.safetensors")), load_file(str(tmp_path / "ft" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # lr 0: the init weights, kept
    with pytest.raises(PolicyError, match="not a checkpoint folder"):
        train([demos], tmp_path / "bad", TrainConfig(init=str(tmp_path / "nothing")), progress=False, log=lambda s: None)
    # a new glimpse tile size over the init checkpoint: same weights, the new size in the saved config
    # (and another glimpse count)
    tc.tile_pt, tc.max_glimpses = 32, 7
    train([demos], tmp_path / "ft32", tc, cache_dir=tmp_path / "cache", progress=False, log=lambda s: None)
    c = load_file(str(tmp_path / "ft32" / "model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a)
    saved = json.loads((tmp_path / "ft32" / "config.json").read_text())
    assert (saved["tile_pt"], saved["max_glimpses"]) == (32, 7)
    tc.tile_pt = 20
    with pytest.raises(TrainError, match="multiple of the 8-point cell"):
        train([demos], tmp_path / "bad", tc, progress=False, log=lambda s: None)
    tc.tile_pt, tc.max_glimpses = None, 0
    with pytest.raises(TrainError, match="max_glimpses must be at least 1"):
        train([demos], tmp_path / "bad", tc, progress=False, log=lambda s: None)


def test_shifted_samples_and_held_out_figures(demos, tmp_path):
    from policies.pixel.config import PixelConfig
    from policies.train import evaluate_offline, find_sessions, session_samples

    cfg = PixelConfig.for_size("pixel-tiny", **SMALL)
    sess = find_sessions([demos])[0]
    plain, shifted = session_samples(sess, cfg), session_samples(sess, cfg, shifts=2)
    n = len(plain["labels"])
    assert n > 0 and len(shifted["labels"]) == 3 * n
    # the first copy of each action is the unshifted grid; the others see other tiles
    assert not all((shifted["boxes"][i * 3 + 1] == shifted["boxes"][i * 3]).all() for i in range(n))
    out = _run(demos, tmp_path / "m", steps=2)
    assert out["train_samples"] > 0
    from policies.pixel import PixelModel

    model = PixelModel.from_pretrained(str(tmp_path / "m"))
    data = {k: torch.from_numpy(v) for k, v in plain.items()}
    res = evaluate_offline(model, data, tasks=np.zeros(n, int), task_names=["t"])
    assert 0.0 <= res["val_action_acc"] <= res["val_type_acc"] <= 1.0
    assert res["per_task"]["t"]["samples"] == n and res["val_pt_err"] >= 0.0


def test_the_kept_epoch_is_the_most_accurate_then_the_lowest_held_out_loss():
    from policies.train import _held_out_rank

    epochs = [{"val_action_acc": 0.916, "val_loss": 1.98}, {"val_action_acc": 0.916, "val_loss": 1.70},
              {"val_action_acc": 0.900, "val_loss": 1.50}]
    assert max(range(3), key=lambda i: _held_out_rank(epochs[i])) == 1  # a tie: the lower loss
    epochs[2]["val_action_acc"] = 0.917
    assert max(range(3), key=lambda i: _held_out_rank(epochs[i])) == 2  # accuracy first


@pytest.mark.slow
@pytest.mark.skipif(not (bundled_checkpoint("pixel-small") / "config.json").is_file(), reason="no bundled pixel-small")
def test_bundled_pixel_small_runs_unseen_episodes():
    from agent.desktops.virtual import task_names
    from agent.desktops.virtual.evaluate import EVAL_SEED, episode_specs, run_episodes, summarise

    res = run_episodes(episode_specs(["click-button", "close-dialog"], 2, [(640, 480, 1.0)]), "pixel-small")
    s = summarise(res)
    assert s["episodes"] == 4
    assert all(r["errors"] == 0 for r in res)
    # The bundled eval.json is a real closed-loop record on unseen seeds, for every task at each
    # required size, consistent with itself; its worst size is what decides whether `dw demo`
    # runs this checkpoint (policies.registry.SUCCESS_BAR).
    doc = json.loads((bundled_checkpoint("pixel-small") / "eval.json").read_text())
    assert doc["seeds"][0] >= EVAL_SEED
    eps = doc["episodes"]
    assert {e["task"] for e in eps} == set(task_names())
    assert {(tuple(e["size"]), e["scale"]) for e in eps} == {((640, 480), 1.0), ((1920, 1080), 1.0),
                                                              ((5120, 2880), 2.0)}
    assert all(e["seed"] >= EVAL_SEED for e in eps)
    assert abs(doc["overall"] - sum(e["success"] for e in eps) / len(eps)) < 1e-9
    assert abs(doc["min_over_sizes"] - min(doc["mean_over_tasks"].values())) < 1e-9
    assert doc["latency"]["p50_ms"] > 0


@pytest.mark.parametrize("name", ["miniwob-pixel-tiny", "miniwob-pixel-small"])
def test_bundled_miniwob_checkpoints_load_by_name_and_act(name):
    from capture import Frame, Screen
    from policies.base import Observation
    from policies.registry import bundled_checkpoint, load_policy

    if not (bundled_checkpoint(name) / "config.json").is_file():
        pytest.skip(f"no bundled {name}")
    pol = load_policy(name)
    px = np.full((210, 160, 4), 255, np.uint8)
    px[100:130, 40:120] = (200, 120, 40, 255)  # a button-like block on MiniWoB's white task area
    obs = Observation(Frame(px, 0.0, 0, Screen(160, 210)), 'Click on the "ok" button.', (0.5, 0.5), ())
    pol.reset(obs.instruction)
    acts = pol.act(obs)
    assert len(acts) <= 1
    for a in acts:
        if a.point is not None:
            assert 0 <= a.point[0] <= 1 and 0 <= a.point[1] <= 1
    doc = json.loads((bundled_checkpoint(name) / "eval.json").read_text())
    assert doc["suite"] == "miniwob" and doc["seed"] >= 100_000  # evaluation seeds never used for demos
    tasks = doc["summary"]["tasks"]
    assert len(tasks) == 17 and all(v[doc["policies"][0]]["episodes"] >= 50 for v in tasks.values())


def test_dagger_sessions_teach_the_expert_labels_with_executed_history(tmp_path):
    """``dw demos --dagger``: the policy drives, the expert labels each state; training learns
    the labels, and the history it sees is what the policy really did."""
    from agent.cli.main import main
    from agent.sessions.format import EXPERT_LABEL, EXPERT_TARGET, open_session
    from policies.pixel.codec import LABEL_FIELDS, action_label, history_features
    from policies.pixel.config import PixelConfig
    from policies.pixel.model import word_position
    from policies.pixel.preprocess import Preprocessor, encode_text
    from policies.train import session_samples

    out = tmp_path / "dagger"
    assert main(["demos", "--tasks", "click-button", "--episodes", "2", "--sizes", "640x480", "--plain",
                 "--dagger", "random", "--out", str(out), "--json"]) == 0
    cfg = PixelConfig.for_size("pixel-tiny", **SMALL)
    for path in sorted(out.iterdir()):
        s = open_session(path)
        executed = s.actions(("policy",))
        labels = [e for e in s.events if e.source == "system" and e.raw.get("event") == EXPERT_LABEL]
        assert executed and len(labels) >= 1
        assert [e.action for e in executed] != [e.action for e in labels]  # random is not the expert
        got = session_samples(path, cfg)
        assert len(got["labels"]) == len(labels)
        # the last label's sample: its own label, and the executed actions before it as history
        last = labels[-1]
        before = [e.action for e in executed if e.line < last.line]
        frame = next(f for f in s.frames() if f.index == last.frame)
        v = Preprocessor(cfg)(frame)
        _, raw = encode_text(s.instruction, cfg.max_text)
        lab, _ = action_label(cfg, last.action, v.boxes, v.mask, raw, -1)
        # and the word naming the expert's target: the button's label, quoted in the instruction
        (word,) = [e.raw["word"] for e in s.events if e.raw.get("event") == EXPERT_TARGET and e.frame == last.frame]
        lab["word"] = word_position(raw, word)
        assert lab["word"] == s.instruction.index(f'"{word}"') + 1
        assert got["labels"][-1].tolist() == [lab[k] for k in LABEL_FIELDS]
        htypes, _ = history_features(cfg, before, raw)
        assert np.array_equal(got["history_types"][-1], htypes)
    assert main(["demos", "--dagger", "random", "--workers", "2", "--out", str(tmp_path / "x")]) == 2
    assert main(["demos", "--dagger", "random", "--beta", "1.5", "--out", str(tmp_path / "x")]) == 2
    # beta 1: the expert's action runs at every step: what ran is exactly what was labelled
    assert main(["demos", "--tasks", "click-button", "--episodes", "2", "--sizes", "640x480", "--plain",
                 "--dagger", "random", "--beta", "1", "--out", str(tmp_path / "b1"), "--json"]) == 0
    for path in (tmp_path / "b1").iterdir():
        s = open_session(path)
        labels = [e.action for e in s.events if e.source == "system" and e.raw.get("event") == EXPERT_LABEL]
        assert labels == [e.action for e in s.actions(("policy",))]


def test_the_sample_cache_prunes_least_recently_used_first(tmp_path, capsys):
    import os

    from agent.cli.main import main
    from policies.train import _load_npz, _save_npz, prune_cache

    d = tmp_path / "cache"
    d.mkdir()
    for i in range(4):  # 4 files of 8,000 bytes of samples each, used in the order 0, 1, 2, 3
        f = d / f"s{i}.npz"
        _save_npz(f, {"x": np.full(1000, i, np.int64)})
        os.utime(f, (1000 + i, 1000 + i))
    size = (d / "s0.npz").stat().st_size
    assert _load_npz(d / "s0.npz")["x"][0] == 0  # reading a file marks it used: now the newest
    assert main(["cache", str(d), "--max-gb", str(2.5 * size / 1e9), "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["files"] == 4 and dry["removed_files"] == 2 and len(list(d.glob("*.npz"))) == 4
    r = prune_cache(d, int(2.5 * size))
    assert r["removed_files"] == 2 and r["removed_bytes"] == 2 * size
    assert sorted(f.name for f in d.glob("*.npz")) == ["s0.npz", "s3.npz"]
    assert prune_cache(d, 10**12)["removed_files"] == 0  # under the cap: nothing goes
    assert main(["cache", str(tmp_path / "nowhere")]) == 2  # a clear error, not a traceback


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc")
def test_joining_samples_consumes_them_and_peaks_near_one_copy():
    """``dw train`` joins every session's samples into one array per input: consumed as they
    are copied (and the freed heap handed back), the process's peak memory grows by the joined
    arrays alone, not by a second copy of the samples (measured in a fresh process)."""
    import subprocess
    import sys

    from policies.train import concat

    def parts():
        r = np.random.default_rng(0)
        return [{"glimpses": r.integers(0, 255, (n, 48, 48, 3), dtype=np.uint8),
                 "labels": r.integers(0, 9, (n, 5), dtype=np.int64)} for n in (3, 1, 4, 2)]
    want = {k: np.concatenate([p[k] for p in parts()]) for k in ("glimpses", "labels")}
    kept, used = parts(), parts()
    got, got2 = concat(kept), concat(used, consume=True)
    assert all(np.array_equal(got[k], want[k]) and np.array_equal(got2[k], want[k]) for k in want)
    assert all(len(p) == 2 for p in kept) and not any(used)  # consumed: every part handed over
    with pytest.raises(ValueError, match="differ in shape"):
        concat([{"x": np.zeros((1, 2))}, {"x": np.zeros((1, 3))}])
    # this process's own high-water mark (VmHWM; getrusage's maxrss carries the forking parent's over exec)
    probe = """
import sys, numpy as np
from policies.train import concat
def hwm():
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
parts = [{"glimpses": np.full((3, 48, 48, 48, 3), 1 + i % 254, np.uint8)} for i in range(400)]
size = sum(p["glimpses"].nbytes for p in parts)
before = hwm()
out = concat(parts, consume=sys.argv[1] == "1")
print((hwm() - before) / size)
"""
    grown = {c: float(subprocess.run([sys.executable, "-c", probe, c], capture_output=True, text=True, check=True,
                                     cwd=Path(__file__).resolve().parents[1]).stdout) for c in "01"}
    assert grown["0"] > 0.8  # kept parts: a second copy
    assert grown["1"] < 0.3, grown  # consumed: about a part at a time
