"""Teaching a checkpoint a task from a few recorded demos (``dw train``, recipes/teach.toml): which of
a person's pointer moves become samples, which epoch is kept on a small held-out split, what the
output folder and the sample cache hold, and what ``dw train --help`` says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.training import recipes
from agent.training.dataset import load_samples, session_samples
from policies.pixel import PixelConfig

ROOT = Path(__file__).resolve().parent.parent
HUMAN = ROOT / "fixtures" / "sessions" / "xdotool-record"  # 48 frames of a live screen, 640x480
EXPERT = ROOT / "fixtures" / "sessions" / "virtual-click-checkboxes"  # the expert's moves, then clicks
SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "stem_channels": 4, "max_glimpses": 8}
MODEL = '[model]\nsize = "pixel-tiny"\nconfig = { ' + ", ".join(f"{k} = {v}" for k, v in SMALL.items()) + " }\n"

# a person's demo as dw record writes it: moves on the way to each click, a rest before a key,
# a path ending in a scroll, and a pointer resting before the done hotkey
EVENTS = [
    ("move", 3, {"x": 0.2, "y": 0.2}), ("move", 6, {"x": 0.5, "y": 0.3}),
    ("click", 9, {"x": 0.5, "y": 0.3, "button": "left", "count": 1}),
    ("move", 16, {"x": 0.5, "y": 0.66}), ("key", 20, {"keys": "tab"}),
    ("move", 25, {"x": 0.1, "y": 0.1}), ("move", 28, {"x": 0.3, "y": 0.4}),
    ("scroll", 32, {"x": 0.3, "y": 0.4, "dx": 0, "dy": 1}),
    ("move", 36, {"x": 0.7, "y": 0.7}), ("move", 40, {"x": 0.8, "y": 0.8}),
    ("done", 44, {}),
]
CURSOR0 = [0.9, 0.9]


def human_demo(where: Path, events=EVENTS) -> Path:
    """The live fixture session's frames with ``events`` as the person's input, and ``cursor0``."""
    shutil.copytree(HUMAN, where)
    meta = json.loads((where / "session.json").read_text())
    (where / "session.json").write_text(json.dumps({**meta, "cursor0": CURSOR0}))
    lines = [json.loads((HUMAN / "events.jsonl").read_text().splitlines()[0])]  # the start event
    for i, (kind, frame, fields) in enumerate(events):
        lines.append({"action": {"type": kind, **fields}, "frame": frame, "source": "human", "t": 0.3 + 0.1 * i})
    lines.append({"event": "stop", "frame": 47, "reason": "done", "source": "system", "t": 4.8})
    (where / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return where


def _types(cfg: PixelConfig, data: dict) -> list[str]:
    return [cfg.action_types[t] for t in data["labels"][:, 0]]


def test_intent_drops_the_moves_a_move_or_a_pointer_action_follows(tmp_path):
    from policies.actions import parse_action
    from policies.pixel.codec import history_features
    from policies.pixel.processing import encode_text

    cfg = PixelConfig.for_size("pixel-tiny", **SMALL)
    demo = human_demo(tmp_path / "demo")
    every, intent = session_samples(demo, cfg, moves="all"), session_samples(demo, cfg)  # intent: the default
    assert _types(cfg, every) == [kind for kind, _, _ in EVENTS]
    # kept: the rest before the key and the one before done (hovers); the done trains the done type
    assert _types(cfg, intent) == ["click", "move", "key", "scroll", "move", "done"]
    kept = [parse_action({"type": k, **f}) for k, _, f in EVENTS]
    kept = [kept[i] for i in (2, 3, 4, 7, 9, 10)]
    _, raw = encode_text("", cfg.max_text)
    for i in range(len(kept)):  # the history is the kept actions alone, as a policy's own at run time
        types, points = history_features(cfg, kept[:i], raw)
        assert np.array_equal(intent["history_types"][i], types) and np.allclose(intent["history_points"][i], points)
    # the cursor is where the kept actions left it: no dropped move carried it onto the click's target
    assert np.allclose(intent["cursor"][:, :2], [CURSOR0, [0.5, 0.3], [0.5, 0.66], [0.5, 0.66], [0.3, 0.4], [0.8, 0.8]])
    assert np.allclose(every["cursor"][2, :2], [0.5, 0.3])  # moves="all": the pointer had arrived


def test_after_dropped_moves_a_sample_shows_the_screen_before_the_pointer_set_off(tmp_path):
    cfg = PixelConfig.for_size("pixel-tiny", **SMALL)
    demo = human_demo(tmp_path / "demo")
    every, intent = session_samples(demo, cfg, moves="all"), session_samples(demo, cfg)
    # every's samples show frames 3, 6, 9, 16, 20, 25, 28, 32, 36, 40, 44 (each action's own); the
    # click (frame 9) shows the first dropped move's frame 3, the scroll (32) frame 25, the hover
    # move kept before done (40) frame 36; the key and the done had no dropped moves before them
    own = {f: i for i, (_, f, _) in enumerate(EVENTS)}
    for k, frame in enumerate((3, 16, 20, 25, 36, 44)):
        assert np.array_equal(intent["global_view"][k], every["global_view"][own[frame]])
    assert not np.array_equal(every["global_view"][own[3]], every["global_view"][own[9]])  # frames differ


def test_an_experts_moves_are_its_own_and_stay(tmp_path):
    cfg = PixelConfig.for_size("pixel-tiny", **SMALL)
    every, intent = session_samples(EXPERT, cfg, moves="all"), session_samples(EXPERT, cfg)
    assert "move" in _types(cfg, intent) and intent.keys() == every.keys()
    assert all(np.array_equal(every[k], intent[k]) for k in every)
    # the setting is part of the cache key: a session cached with one is made anew with the other
    cache = tmp_path / "cache"
    load_samples([EXPERT], cfg, cache, moves="all")
    load_samples([EXPERT], cfg, cache)
    assert len(list(cache.glob("*.npz"))) == 2
    with pytest.raises(ValueError, match="moves must be one of intent, all"):
        session_samples(EXPERT, cfg, moves="every")


def _recipe(tmp_path: Path, train: str, name: str = "r") -> list[dict]:
    f = tmp_path / f"{name}.toml"
    f.write_text(f"{MODEL}[train]\n{train}")
    return recipes.load_recipe(f)


@pytest.fixture
def demos(tmp_path):
    """Five small demos of a person's (the same input over the fixture's frames)."""
    d = tmp_path / "demos"
    for i in range(5):
        human_demo(d / f"demo-{i}")
    return d


def test_on_a_small_held_out_split_the_last_epoch_is_kept_and_named(demos, tmp_path, monkeypatch, capsys):
    import policies.pixel.training as T
    from agent.cli.commands.train import final_line

    figures = []

    def held_out(model, data, **kw):  # each epoch's held-out figures: the first epoch looks best
        acc = figures.pop(0)
        return {"val_loss": 1.0 - acc, "val_action_acc": acc, "val_type_acc": acc}

    monkeypatch.setattr(T, "evaluate_offline", held_out)
    stages = _recipe(tmp_path, "epochs = 3\nbatch_size = 4\nwarmup_steps = 1\nval_fraction = 0.4\n")
    logs: list[str] = []
    figures[:] = [0.9, 0.5, 0.6]
    s = recipes.run(stages, [str(demos)], tmp_path / "a", cache=tmp_path / "cache", progress=False, log=logs.append)
    assert s["val_samples"] == 12 and s["best_epoch"] is None and s["kept_epoch"] == 3
    assert any("12 held-out samples are too few (under 200)" in line for line in logs)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["training"]["kept_epoch"] == 3
    line = final_line(s, "a")
    assert "epoch 3 of 3 (the last)" in line and "val_action_acc=0.600" in line
    # with enough held out to choose by, the best epoch is kept, and the last line is that epoch's
    monkeypatch.setattr(recipes, "MIN_VAL_TO_CHOOSE", 10)
    figures[:] = [0.9, 0.5, 0.6]
    s = recipes.run(stages, [str(demos)], tmp_path / "b", cache=tmp_path / "cache", progress=False, log=logs.append)
    assert s["best_epoch"] == s["kept_epoch"] == 1
    line = final_line(s, "b")
    assert "epoch 1 of 3 (the best held-out)" in line and "val_action_acc=0.900" in line
    assert "val_action_acc=0.600" not in line


def test_out_holds_the_model_alone_and_the_cache_is_the_users(demos, tmp_path, monkeypatch, capsys):
    from agent.cli.main import main

    monkeypatch.setenv("DW_CACHE_DIR", str(tmp_path / "user-cache"))
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"{MODEL}[train]\nepochs = 2\nbatch_size = 8\nval_fraction = 0.0\n")
    out = tmp_path / "worker"
    assert main(["train", str(demos), "--recipe", str(recipe), "--out", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("saved pixel-tiny") and "epoch 2 of 2 (the last)" in last
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "training.json"]
    assert len(list((tmp_path / "user-cache" / "samples").glob("*.npz"))) == 5
    assert main(["cache", "--json"]) == 0
    held = json.loads(capsys.readouterr().out)
    assert held["dir"] == str(tmp_path / "user-cache" / "samples") and held["files"] == 5
    # --keep-state keeps the last epoch's weights and the optimizer's state
    assert main(["train", str(demos), "--recipe", str(recipe), "--out", str(out), "--keep-state", "--json"]) == 0
    assert (out / "checkpoint" / "trainer_state.pt").is_file() and (out / "checkpoint" / "model.safetensors").is_file()


def test_a_reader_groundings_cache_keeps_its_reads_not_its_windows(tmp_path):
    cfg = PixelConfig.for_size("pixel-tiny", **SMALL)
    cache = tmp_path / "cache"

    def reads(data):  # a transform as precompute is: the windows give way to what was read in them
        out = {k: v for k, v in data.items() if k != "read_glimpses"}
        out["match"] = np.zeros((len(data["labels"]), 1), np.float16)
        return out

    got = load_samples([EXPERT], cfg, cache, transform=reads, transform_key="k1")
    assert [p.name.endswith("-k1.npz") for p in cache.glob("*.npz")] == [True] and "match" in got[0]
    again = load_samples([EXPERT], cfg, cache, transform=lambda d: pytest.fail("read again"), transform_key="k1")
    assert np.array_equal(again[0]["labels"], got[0]["labels"])


def test_dw_train_help_gives_every_default():
    from agent.cli.main import build_parser

    parser = build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" train"))
    for action in train._actions:
        if action.dest not in ("help", "out") and action.help != "==SUPPRESS==":  # hidden: old spellings
            assert "(default: " in (action.help or ""), action.dest


def test_teach_recipe_fine_tunes_a_bundled_checkpoint_in_minutes():
    (stage,) = recipes.load_recipe(ROOT / "recipes" / "teach.toml")
    t = stage["train"]
    assert stage["model"] == {"init": "pixel-small"} and t["moves"] == "intent"
    assert t["time_budget_s"] <= 15 * 60  # + preprocessing and the first epoch: within 20 minutes
    assert t["lr"] <= 5e-4 and not t.get("train_only")
