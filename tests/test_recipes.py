"""Training recipes: every bundled checkpoint's recipe builds the model the checkpoint is, and a
recipe's stages train in order, each growing the weights the one before kept."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent.errors import UserError
from agent.training import recipes

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.toml"))


def test_every_bundled_checkpoint_has_a_recipe_and_a_model_card():
    for folder in sorted((ROOT / "fixtures" / "checkpoints").iterdir()):
        if (folder / "config.json").is_file():
            assert (ROOT / "recipes" / f"{folder.name}.toml").is_file(), folder.name
            assert (folder / "README.md").is_file(), folder.name


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_builds_the_bundled_checkpoints_shape(path):
    stages = recipes.load_recipe(path)
    # a bundled checkpoint's own recipe, one that fine-tunes a bundled checkpoint (teach.toml), or one
    # named after a bundled checkpoint that continues a run folder of its chain (pixel-small-buttons.toml)
    bundled_names = sorted((p.name for p in (ROOT / "fixtures" / "checkpoints").iterdir() if p.is_dir()), key=len)
    init = stages[0]["model"].get("init")
    name = (path.stem if path.stem in bundled_names else init if init in bundled_names else
            next(n for n in reversed(bundled_names) if path.stem.startswith(n + "-")))
    model = None
    for stage in stages:
        if model is None:
            # a run folder of the chain is not in a clone: the checkpoint the chain became stands in
            first = {**stage["model"], "init": name} if init and init not in bundled_names else stage["model"]
            model = recipes.build_model(first, size=None, init=None)
        else:  # grown from the stage before, as recipes.run does from its output folder
            from policies.pixel import PixelConfig
            from policies.pixel.training import grow

            cfg = {k: v for k, v in model.config.to_dict().items()
                   if k not in ("architectures", "model_type", "transformers_version", "training", "dtype")}
            over = {k: stage["model"][k] for k in ("grounding", "refiners") if k in stage["model"]}
            model = grow(model, PixelConfig(**{**cfg, **over}))
    bundled = json.loads((ROOT / "fixtures" / "checkpoints" / name / "config.json").read_text())
    got = model.config.to_dict()
    for key in ("hidden_size", "num_layers", "tile_pt", "max_glimpses", "grounding", "refiners"):
        assert got[key] == bundled[key], key


# a model and settings small enough to train in a test
TINY = """
[model]
size = "pixel-tiny"
config = { hidden_size = 32, num_layers = 1, num_heads = 2, max_glimpses = 8, stem_channels = 4 }
[train]
epochs = 1
batch_size = 4
val_fraction = 0.0
"""


def test_stages_train_in_order_and_grow(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(TINY + """[[stages]]
name = "plain"
[[stages]]
name = "cells"
model = { refiners = [{ kind = "cells" }] }
train = { train_only = ["refiners."] }
""")
    out = tmp_path / "out"
    summary = recipes.run(recipes.load_recipe(recipe), [str(ROOT / "fixtures" / "sessions" / "virtual-click-checkboxes")],
                          out, cache=tmp_path / "cache", progress=False, log=lambda s: None)
    assert summary["train_samples"] > 0 and summary["stage"] == "cells"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["refiners"] == [{"kind": "cells", "near": False}] and cfg["training"]["train_only"] == ["refiners."]
    assert (out / "stages" / "plain" / "config.json").is_file()
    # the trainer's state (for --resume of an interrupted run) goes once every stage has finished
    assert not (out / "checkpoint").exists() and not (out / "stages" / "plain" / "checkpoint").exists()
    from safetensors.torch import load_file

    first, last = load_file(str(out / "stages" / "plain" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all((first[k] == last[k]).all() for k in first)  # only the refiner trained in the second stage
    assert any(k.startswith("refiners.0.") for k in last)


@pytest.mark.parametrize("text, error", [("[model]\nsize = 3\nbogus = 1\n", "unknown key"),
                                         ("[train]\nepochz = 2\n", "unknown key"),
                                         ("[train]\nmoves = 'some'\n", "moves must be one of intent, all"),
                                         ("not toml [", "not a TOML recipe"),
                                         ("[[stages]]\nmodel = { grounding = { kind = 'ocr' } }\n", None)])
def test_bad_recipes_are_one_line_errors(tmp_path, text, error):
    f = tmp_path / "r.toml"
    f.write_text(text)
    if error:
        with pytest.raises(UserError, match=error):
            recipes.load_recipe(f)
    else:
        with pytest.raises(UserError, match="reader or template"):
            recipes.build_model(recipes.load_recipe(f)[0]["model"], size="pixel-tiny", init=None)


def test_a_stage_may_learn_from_some_actions_only(tmp_path):
    """``[train] actions`` keeps the samples of those kinds (the heads ``train_only`` names learn
    from the samples that teach them); a kind the model has not is refused by name."""
    from agent.training.dataset import load_samples
    from policies.pixel.codec import LABEL_FIELDS

    session = ROOT / "fixtures" / "sessions" / "virtual-click-checkboxes"
    recipe = tmp_path / "r.toml"
    recipe.write_text(TINY)
    cfg = recipes.build_model(recipes.load_recipe(recipe)[0]["model"], size=None, init=None).config
    labels = load_samples([session], cfg, None)[0]["labels"]
    kinds = [cfg.action_types[t] for t in labels[:, LABEL_FIELDS.index("type")]]
    assert "click" in kinds and len(set(kinds)) > 1
    recipe.write_text(TINY + 'actions = ["click"]\n')
    summary = recipes.run(recipes.load_recipe(recipe), [str(session)], tmp_path / "out", cache=tmp_path / "cache",
                          progress=False, log=lambda s: None)
    assert summary["train_samples"] == kinds.count("click")
    recipe.write_text(TINY + 'actions = ["click", "hover"]\n')
    with pytest.raises(UserError, match="hover not among the model's actions"):
        recipes.run(recipes.load_recipe(recipe), [str(session)], tmp_path / "out2", cache=tmp_path / "cache",
                    progress=False, log=lambda s: None)


def test_a_recipe_stops_before_a_stage_whose_data_is_not_made_yet_and_resumes(tmp_path, monkeypatch):
    dagger = tmp_path / "dagger"  # a set made with the first stage's weights, between the runs
    recipe = tmp_path / "r.toml"
    recipe.write_text(TINY + f'[[stages]]\nname = "a"\n[[stages]]\nname = "b"\ndata = {{ sessions = ["{dagger}"] }}\n'
                      '[[stages]]\nname = "c"\n')
    stages, out, ran = recipes.load_recipe(recipe), tmp_path / "out", []

    def stage(st, sessions, where, *, init, **kw):  # what each stage would train: its folder and start
        ran.append((st["name"], init))
        (where / "checkpoint").mkdir(parents=True, exist_ok=True)
        (where / "training.json").write_text(json.dumps({"stage": st["name"]}))
        return {"stage": st["name"]}

    monkeypatch.setattr(recipes, "train_stage", stage)
    go = lambda **kw: recipes.run(stages, [], out, init="pixel-tiny", log=lambda s: None, **kw)  # noqa: E731
    with pytest.raises(UserError, match=f"stage b: {re.escape(str(dagger))} does not exist yet; make it .* with the "
                                        f"weights in {re.escape(str(out / 'stages' / 'a'))}\\), then run again with --resume"):
        go()
    assert ran == [("a", "pixel-tiny")]
    dagger.mkdir()
    assert go(resume=True) == {"stage": "c"}  # a kept, b from a's weights, c (the last) writes OUT
    assert ran[1:] == [("b", str(out / "stages" / "a")), ("c", str(out / "stages" / "b"))]
    assert not (out / "checkpoint").exists() and not (out / "stages" / "a" / "checkpoint").exists()
    recipe.write_text(TINY + '[[stages]]\nname = "a"\n[[stages]]\nname = "a"\n')
    with pytest.raises(UserError, match="a stage named 'a' comes earlier"):
        recipes.load_recipe(recipe)


def test_a_key_combo_the_demos_press_grows_the_key_head(tmp_path):
    """A demo's combo the key head cannot name (ctrl+n, say) would label nothing: training appends it
    to the model's keys; a grown key head keeps the rows it had."""
    import torch

    from agent.sessions.demos import record_demo
    from agent.training.dataset import session_keys
    from policies.pixel.configuration import KEYS
    from policies.pixel.training import with_keys

    for seed in range(40):  # the shortcut family's combo comes from the seed
        got = record_demo({"task": "keyboard-shortcut", "seed": seed, "size": [640, 480], "scale": 1.0,
                           "human_like": False}, str(tmp_path / "demos"))
        new = [k for k in session_keys([Path(got["path"])]) if k not in KEYS]
        if new:
            break
    assert new, "no seed of keyboard-shortcut pressed a combo outside the default keys"
    recipe = tmp_path / "r.toml"
    recipe.write_text(TINY)
    logged = []
    recipes.run(recipes.load_recipe(recipe), [got["path"]], tmp_path / "out", cache=tmp_path / "cache",
                progress=False, log=logged.append)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["actions"]["keys"] == [*KEYS, *new] and any(new[0] in line for line in logged)
    model = recipes.build_model({}, size=None, init=str(tmp_path / "out"))
    grown = with_keys(model, ["ctrl+shift+q"])
    w0, w1 = model.head_key.weight, grown.head_key.weight
    assert w1.shape[0] == w0.shape[0] + 1 and torch.equal(w1[:-1], w0) and torch.equal(grown.head_key.bias[:-1], model.head_key.bias)
    assert torch.equal(grown.head_type.weight, model.head_type.weight)
