"""Behaviour cloning on a couple of demo sessions (CPU, a few steps) by recipes and ``dw train``,
the sample cache, and the bundled checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agent.errors import UserError
from agent.sessions.demos import demo_specs, record_demo
from agent.training import recipes
from policies.registry import bundled_checkpoint

SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "stem_channels": 8, "max_glimpses": 8}
MODEL = '[model]\nsize = "pixel-tiny"\nconfig = { ' + ", ".join(f"{k} = {v}" for k, v in SMALL.items()) + " }\n"


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    for spec in demo_specs(["click-button", "enter-text"], 2, [(640, 480, 1.0)], seed=0):
        record_demo(spec, str(out))
    return out


def _recipe(out: Path, text: str) -> Path:
    """A recipe file beside ``out``, holding ``text``."""
    f = out.parent / f"{out.name}.toml"
    f.write_text(text)
    return f


def _train(demos, out: Path, text: str) -> dict:
    """``dw train``'s run of the recipe ``text`` on the demos, with one sample cache for the test."""
    return recipes.run(recipes.load_recipe(_recipe(out, text)), [str(demos)], out, cache=out.parent / "cache",
                       progress=False, log=lambda s: None)


def _plain(steps: int = 12, seed: int = 0) -> str:
    return (f"{MODEL}[train]\nepochs = 100\nbatch_size = 8\nlr = 3e-3\nseed = {seed}\nmax_steps = {steps}\n"
            "val_fraction = 0.0\nwarmup_steps = 2\n")


def _run(demos, out, steps=12, seed=0):
    return _train(demos, out, _plain(steps, seed))


def test_training_reduces_loss_and_is_deterministic(demos, tmp_path):
    torch.manual_seed(0)  # the model's initial weights: the recipe's seed does not draw them (see below)
    a = _run(demos, tmp_path / "a")
    torch.manual_seed(0)
    b = _run(demos, tmp_path / "b")
    la = [h["train_loss"] for h in a["history"]]
    assert la[-1] < la[0]
    assert la == [h["train_loss"] for h in b["history"]]
    from safetensors.torch import load_file

    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert json.loads((tmp_path / "a" / "training.json").read_text())["train_samples"] > 0


def test_a_recipes_seed_draws_the_initial_weights(demos, tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(1)  # whatever torch's global generator holds when dw train starts: a fresh process's
    _run(demos, tmp_path / "a", steps=1)
    torch.manual_seed(2)
    _run(demos, tmp_path / "b", steps=1)
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_dw_train_makes_a_checkpoint_that_loads_as_a_policy(demos, tmp_path, capsys):
    from agent.cli.main import main
    from agent.desktops.virtual.evaluate import episode_specs, run_episodes

    recipe = _recipe(tmp_path / "m", _plain(steps=2))
    assert main(["train", str(demos), "--recipe", str(recipe), "--out", str(tmp_path / "m"),
                 "--cache", str(tmp_path / "cache"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["size"] == "pixel-tiny" and summary["stage"] == "stage1"
    res = run_episodes(episode_specs(["click-button"], 1, [(640, 480, 1.0)]), str(tmp_path / "m"), max_steps=3)
    assert res[0]["steps"] >= 1 and res[0]["errors"] == 0
    # one-line errors, nothing written
    out = ["--out", str(tmp_path / "bad")]
    assert main(["train", str(demos), "--model-size", "pixel-tiny", "--init", str(tmp_path / "m"), *out]) == 2
    assert "give one" in capsys.readouterr().err
    assert main(["train", str(demos), "--epochs", "0", *out]) == 2
    assert main(["train", str(demos), "--model-size", "pixel-huge", *out]) == 2
    assert "unknown model size 'pixel-huge'" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nowhere"), "--recipe", str(recipe), *out]) == 2
    assert main(["train", str(demos), "--recipe", str(tmp_path / "none.toml"), *out]) == 2
    assert "cannot read the recipe" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_fine_tuning_starts_from_the_init_checkpoint(demos, tmp_path):
    from safetensors.torch import load_file

    _run(demos, tmp_path / "base", steps=2)
    base = json.dumps(str(tmp_path / "base"))
    fine = ("[train]\nepochs = 1\nbatch_size = 8\nlr = 0.0\nmax_steps = 1\nval_fraction = 0.0\n"
            "warmup_steps = 1\nweight_decay = 0.0\n")
    out = _train(demos, tmp_path / "ft", f"[model]\ninit = {base}\n{fine}")
    assert out["init"] == str(tmp_path / "base") and out["steps"] == 1
    a, b = load_file(str(tmp_path / "base" / "model.safetensors")), load_file(str(tmp_path / "ft" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # lr 0: the init weights, kept
    with pytest.raises(UserError, match="not a checkpoint folder"):
        _train(demos, tmp_path / "bad", f"[model]\ninit = {json.dumps(str(tmp_path / 'nothing'))}\n{fine}")
    # a new glimpse tile size over the init checkpoint: same weights, the new size in the saved config
    # (and another glimpse count)
    _train(demos, tmp_path / "ft32", f"[model]\ninit = {base}\nconfig = {{ tile_pt = 32, max_glimpses = 7 }}\n{fine}")
    c = load_file(str(tmp_path / "ft32" / "model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a)
    saved = json.loads((tmp_path / "ft32" / "config.json").read_text())
    assert (saved["tile_pt"], saved["max_glimpses"]) == (32, 7)
    assert not (tmp_path / "bad").exists()


def test_a_tile_off_the_cell_grid_or_no_glimpses_is_refused():
    for config, name in (({"tile_pt": 20}, "tile_pt"), ({"max_glimpses": 0}, "max_glimpses")):
        with pytest.raises(UserError, match=name):
            recipes.build_model({"size": "pixel-tiny", "config": config}, size=None, init=None)


def test_a_misspelt_model_config_field_is_refused_by_name():
    with pytest.raises(UserError, match="tile_size"):
        recipes.build_model({"size": "pixel-tiny", "config": {"tile_size": 32}}, size=None, init=None)


def test_shifted_samples_and_held_out_figures(demos, tmp_path):
    from agent.sessions.format import find_sessions
    from agent.training.dataset import session_samples
    from policies.pixel.configuration import PixelConfig
    from policies.pixel.training import evaluate_offline

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


def test_the_kept_epoch_is_the_most_accurate_then_the_lowest_held_out_loss(demos, tmp_path, monkeypatch):
    import policies.pixel.training as T
    from agent.sessions.format import find_sessions
    from agent.training.dataset import session_samples
    from policies.pixel import PixelConfig, PixelModel

    cfg = PixelConfig.for_size("pixel-tiny", **SMALL)
    data = session_samples(find_sessions([demos])[0], cfg)
    figures = []

    def held_out(model, data, **kw):  # each epoch's held-out figures, as given
        return {"val_loss": figures[0][1], "val_action_acc": figures.pop(0)[0]}

    monkeypatch.setattr(T, "evaluate_offline", held_out)

    def kept(*epochs: tuple[float, float], keep_best: bool = True) -> int | None:
        figures[:] = list(epochs)
        s = T.TrainSettings(epochs=len(epochs), batch_size=64, warmup_steps=1, keep_best=keep_best)
        return T.fit(PixelModel(cfg), data, data, s, tmp_path / "m", progress=False, log=lambda s: None)["best_epoch"]

    assert kept((0.916, 1.98), (0.916, 1.70), (0.900, 1.50)) == 2  # a tie: the lower loss
    assert kept((0.916, 1.98), (0.916, 1.70), (0.917, 1.90)) == 3  # accuracy first
    assert kept((0.916, 1.98), (0.900, 1.70), keep_best=False) is None  # the last epoch's weights


@pytest.mark.slow
@pytest.mark.skipif(not (bundled_checkpoint("pixel-small") / "config.json").is_file(), reason="no bundled pixel-small")
def test_bundled_pixel_small_runs_unseen_episodes():
    from agent.desktops.virtual.evaluate import EVAL_SEED, episode_specs, run_episodes, summarise
    from agent.desktops.virtual.tasks import CLASSIC_TASKS

    res = run_episodes(episode_specs(["click-button", "close-dialog"], 2, [(640, 480, 1.0)]), "pixel-small")
    s = summarise(res)
    assert s["episodes"] == 4
    assert all(r["errors"] == 0 for r in res)
    # The bundled eval.json is a real closed-loop record on unseen seeds, for every task at each
    # required size (the classic tasks, which it learned), consistent with itself; its worst size is what decides whether `dw demo`
    # runs this checkpoint (policies.registry.SUCCESS_BAR).
    doc = json.loads((bundled_checkpoint("pixel-small") / "eval.json").read_text())
    assert doc["seeds"][0] >= EVAL_SEED
    eps = doc["episodes"]
    assert {e["task"] for e in eps} == set(CLASSIC_TASKS)
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
    from agent.training.dataset import session_samples
    from policies.pixel.codec import LABEL_FIELDS, action_label, history_features
    from policies.pixel.configuration import PixelConfig
    from policies.pixel.processing import Preprocessor, encode_text
    from policies.pixel.words import word_position

    out = tmp_path / "dagger"
    assert main(["demos", "--tasks", "click-button", "--episodes", "2", "--sizes", "640x480", "--no-human-like",
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
    assert main(["demos", "--tasks", "click-button", "--episodes", "2", "--sizes", "640x480", "--no-human-like",
                 "--dagger", "random", "--beta", "1", "--out", str(tmp_path / "b1"), "--json"]) == 0
    for path in (tmp_path / "b1").iterdir():
        s = open_session(path)
        labels = [e.action for e in s.events if e.source == "system" and e.raw.get("event") == EXPERT_LABEL]
        assert labels == [e.action for e in s.actions(("policy",))]


def test_the_sample_cache_prunes_least_recently_used_first(tmp_path, capsys):
    import os

    from agent.cli.main import main
    from agent.training.dataset import _load_npz, _save_npz, prune_cache

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

    from agent.training.dataset import concat

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
from agent.training.dataset import concat
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


def test_text_shift_moves_the_instruction_in_the_text_window_only_in_training(demos, tmp_path):
    from policies.pixel import PixelConfig, PixelModel, encode_text

    torch.manual_seed(0)
    m = PixelModel(PixelConfig.for_size("pixel-tiny", **SMALL)).eval()
    short = torch.from_numpy(encode_text('Type "ab" into the "City" field.', 96)[0])[None]
    long = torch.from_numpy(encode_text("x" * 90, 96)[0])[None]
    with torch.no_grad():
        plain = m.encode_text(short).states
        assert torch.equal(m.encode_text(short, torch.tensor([0])).states, plain)  # shift 0: as at inference
        assert not torch.allclose(m.encode_text(short, torch.tensor([7])).states, plain)
        # an instruction of 90 bytes has room for 6 more places: a larger shift stops there
        assert torch.equal(m.encode_text(long, torch.tensor([50])).states, m.encode_text(long, torch.tensor([6])).states)
        assert not torch.equal(m.encode_text(long, torch.tensor([5])).states, m.encode_text(long, torch.tensor([6])).states)
    torch.manual_seed(0)
    out = _train(demos, tmp_path / "s", _plain(steps=3) + "text_shift = 24\n")
    assert out["steps"] == 3
    assert json.loads((tmp_path / "s" / "config.json").read_text())["training"]["text_shift"] == 24
    with pytest.raises(UserError, match="text_shift must be between 0 and 95"):
        _train(demos, tmp_path / "bad", _plain(steps=1) + "text_shift = 96\n")


def test_recolor_shows_a_share_of_samples_in_another_look_and_keeps_the_rest(demos, tmp_path):
    from policies.pixel.training import recolor

    g = torch.Generator().manual_seed(0)
    gv = torch.randint(0, 256, (400, 4, 6, 3), generator=g, dtype=torch.uint8)
    gl = torch.randint(0, 256, (400, 2, 5, 5, 3), generator=g, dtype=torch.uint8)
    out = recolor(gv, gl, 0.5, torch.Generator().manual_seed(1))
    assert out["global_view"].dtype == torch.uint8 and out["glimpses"].shape == gl.shape
    changed = [not torch.equal(out["global_view"][i], gv[i]) for i in range(400)]
    assert 150 < sum(changed) < 250  # about half
    for i in range(400):  # a sample's glimpses change with its global view, and the rest stay
        assert torch.equal(out["glimpses"][i], gl[i]) != changed[i]
    # a recoloured sample's pixels keep their order (inverted: reversed), their spread pressed
    i = changed.index(True)
    a, b = gl[i].flatten().float(), out["glimpses"][i].flatten().float()
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1].abs()
    assert corr > 0.99 and b.std() <= a.std() + 1
    assert recolor(gv, gl, 0.0, torch.Generator().manual_seed(1)) == {}
    torch.manual_seed(0)
    assert _train(demos, tmp_path / "s", _plain(steps=2) + "recolor = 0.5\n")["steps"] == 2
    assert json.loads((tmp_path / "s" / "config.json").read_text())["training"]["recolor"] == 0.5
    with pytest.raises(UserError, match="recolor must be between 0 and 1"):
        _train(demos, tmp_path / "bad", _plain(steps=1) + "recolor = 2\n")
