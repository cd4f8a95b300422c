"""Training recipes: a TOML file per checkpoint, holding what made it.

A recipe has up to four tables (every key optional; unknown keys are refused by name):

- ``[model]``: ``size`` (a ``pixel-*`` size) or ``init`` (a checkpoint folder or bundled name to
  start from), ``config`` (PixelConfig fields over the size's, e.g. ``tile_pt``, ``max_glimpses``),
  ``grounding`` (a :class:`~policies.pixel.configuration.GroundingConfig` table) and ``refiners``
  (a list of :class:`~policies.pixel.configuration.RefinerConfig` tables). Over an ``init`` a
  grounding or refiners grow the model: every weight that fits is kept.
- ``[train]``: :class:`~policies.pixel.training.TrainSettings` fields, plus ``val_fraction``,
  ``shifts`` (extra tile-grid-shifted samples per action), ``moves`` (``"intent"``, the default:
  a person's pointer moves that a move or a pointer action follows teach nothing; ``"all"``: every
  move is a sample; :mod:`agent.training.dataset`), ``workers`` (preprocessing processes),
  ``reader`` (a folder from ``dw reader``: the reader grounding's weights) and ``actions`` (learn
  only from the samples whose action is one of these kinds, e.g. ``["type"]`` with
  ``train_only = ["span_"]``: the heads that copy typed text, from the samples that teach them).
  ``text_shift = N`` moves each training sample's instruction to a random place 0..N in the
  model's text window, so a word is found by what it is and what surrounds it, not by its place.
  ``recolor = P`` shows a share P of the samples in another look (pixels inverted half the time,
  contrast pressed toward the mean): a layout is learnt apart from one theme's greys.
- ``[data]``: ``sessions`` (folders used when ``dw train`` is given none) and ``commands`` (how
  those sessions were made: documentation, never run).
- ``[reader]``: settings of ``dw reader`` (:func:`policies.pixel.reader.pretrain_reader`'s).
- ``[[stages]]``: several runs in order, each a ``model``/``train``/``data`` table over the
  recipe's own, each from the weights the one before it kept.

The kept epoch: ``keep_best`` keeps the epoch with the best held-out action accuracy, but only when
the held-out split holds at least :data:`MIN_VAL_TO_CHOOSE` samples. An accuracy on n samples is
uncertain by about 0.5/sqrt(n) (26 samples: +-0.10; 200: +-0.035), more than late epochs differ
by, so on fewer the best of many epochs is the luckiest, not the best (it tended to be an early,
underfit one); the last epoch, at the end of the decaying schedule, is kept instead, and the log
says so.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

from agent.errors import UserError

TABLES = ("description", "model", "train", "data", "reader", "stages")
MODEL_KEYS = ("size", "init", "config", "grounding", "refiners")
TRAIN_EXTRA = ("val_fraction", "shifts", "moves", "workers", "reader", "actions")
MIN_VAL_TO_CHOOSE = 200  # held-out samples below which keep_best keeps the last epoch (see above)
DATA_KEYS = ("sessions", "commands")


def _check(table: dict, known, where: str) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _check_moves(train: dict, where: str) -> None:
    from agent.training.dataset import MOVES

    if train.get("moves", "intent") not in MOVES:
        raise UserError(f"{where}: moves must be one of {', '.join(MOVES)}, not {train['moves']!r}")


def load_recipe(path: str | Path) -> dict:
    """A recipe file, read and checked (tables and keys): its stages, each a full recipe."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as e:
        raise UserError(f"{path}: cannot read the recipe ({e.strerror or e})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a TOML recipe ({e})") from None
    _check(doc, TABLES, str(path))
    stages = doc.pop("stages", None) or [{}]
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise UserError(f"{path}: stages is a list of tables ([[stages]])")
    out = []
    for i, stage in enumerate(stages):
        where = f"{path} stage {i + 1}"
        _check(stage, ("model", "train", "data", "name"), where)
        merged = {k: {**doc.get(k, {}), **stage.get(k, {})} for k in ("model", "train", "data")}
        merged["reader"] = doc.get("reader", {})
        merged["name"] = stage.get("name", f"stage{i + 1}")
        _check(merged["model"], MODEL_KEYS, f"{where} [model]")
        _check(merged["data"], DATA_KEYS, f"{where} [data]")
        from policies.pixel.training import TrainSettings

        _check(merged["train"], [f.name for f in dataclasses.fields(TrainSettings)] + list(TRAIN_EXTRA),
               f"{where} [train]")
        _check_moves(merged["train"], f"{where} [train]")
        if any(o["name"] == merged["name"] for o in out):
            raise UserError(f"{where}: a stage named {merged['name']!r} comes earlier (each writes OUT/stages/NAME)")
        out.append(merged)
    return out


def build_model(model: dict, *, size: str | None, init: str | None):
    """The model a stage trains: from ``init`` (the option, the recipe's, or the stage before), else
    a fresh one of ``size``, then grown to the recipe's config, grounding and refiners."""
    import inspect

    from policies.base import PolicyError
    from policies.pixel import SIZES, PixelConfig, PixelModel, load_model
    from policies.pixel.training import grow, plain_config

    start = init or model.get("init")
    overrides = dict(model.get("config", {}))
    fields = set(inspect.signature(PixelConfig.__init__).parameters) - {"self", "kwargs", "grounding", "refiners"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UserError(f"the recipe's [model] config: unknown field(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(fields))}")
    for key in ("grounding", "refiners"):
        if key in model:
            overrides[key] = model[key]
    try:
        if start:
            base = load_model(start)
            if not overrides:
                return base
            return grow(base, PixelConfig(**{**plain_config(base), **overrides}))
        size = size or model.get("size") or "pixel-small"
        if size not in SIZES:
            raise UserError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
        return PixelModel(PixelConfig.for_size(size, **overrides))
    except PolicyError as e:
        raise UserError(str(e)) from None
    except (ValueError, TypeError) as e:
        raise UserError(f"the recipe's model: {e}") from None


def _has_reader(init: str | None) -> bool:
    """Whether the checkpoint ``init`` (a folder or bundled name) carries a reader grounding."""
    import json

    from policies.checkpoints import checkpoint_dir

    if not init:
        return False
    try:
        g = json.loads((checkpoint_dir(init) / "config.json").read_text()).get("grounding")
    except (OSError, ValueError):
        return False
    return isinstance(g, dict) and g.get("kind") == "reader"


def _only_actions(part: dict, types: list[int]) -> dict:
    """A session's samples -> those whose action type is one of ``types`` ({} if none is)."""
    import numpy as np

    from policies.pixel.codec import LABEL_FIELDS

    if not part or not len(part.get("labels", ())):
        return part
    keep = np.isin(part["labels"][:, LABEL_FIELDS.index("type")], types)
    return {k: v[keep] for k, v in part.items()} if keep.any() else {}


def train_stage(stage: dict, sessions: list[str], out: Path, *, size: str | None, init: str | None,
                epochs: int | None, device: str, seed: int | None, resume: bool, cache: Path,
                progress: bool, log) -> dict:
    """One stage: the model, its samples (cached), then :func:`policies.pixel.training.fit`."""
    import numpy as np

    from agent.sessions.format import find_sessions
    from agent.training.dataset import concat, load_samples, session_keys, session_task, split_sessions
    from policies.pixel.training import (
        TrainError,
        TrainSettings,
        fit,
        load_reader_weights,
        precompute,
        precompute_key,
        with_keys,
    )

    t = dict(stage["train"])
    extra = {k: t.pop(k) for k in TRAIN_EXTRA if k in t}
    settings = TrainSettings(**t)
    settings.train_only = tuple(settings.train_only)
    if epochs is not None:
        settings.epochs = epochs
    if seed is not None:
        settings.seed = seed
    settings.device = device
    if settings.epochs < 1:
        raise UserError("epochs must be at least 1")
    import torch

    from policies.pixel.grounding import ReaderGrounding

    torch.manual_seed(settings.seed)  # a fresh model's weights, and a grown part's, come from the recipe's seed
    model = build_model(stage["model"], size=size, init=init)
    try:
        if extra.get("reader"):
            load_reader_weights(model, extra["reader"])
        elif isinstance(model.grounding, ReaderGrounding) and not _has_reader(init or stage["model"].get("init")):
            raise UserError("a reader grounding reads with a pretrained reader: give [train] reader = FOLDER "
                            "(made by dw reader), or start from a checkpoint that reads")
    except TrainError as e:
        raise UserError(str(e)) from None
    paths = [Path(p) for p in find_sessions(sessions or stage["data"].get("sessions", []))]
    if not paths:
        raise UserError("no sessions: name session folders, or give the recipe's [data] sessions")
    for p in paths:
        if not (p / "session.json").is_file():
            raise UserError(f"{p}: not a session (no session.json)")
    missing = [k for k in session_keys(paths) if k not in model.config.keys]
    if missing:  # a combo the demos press and the key head cannot name would teach nothing
        model = with_keys(model, missing)
        log(f"the key head learns {len(missing)} more combo(s) the sessions press: {', '.join(missing)}")
    cfg = model.config
    shifts = int(extra.get("shifts", 0))
    if not 0 <= shifts <= 8:
        raise UserError("shifts must be between 0 and 8")
    if not 0 <= settings.recolor <= 1:
        raise UserError("recolor must be between 0 and 1 (the share of samples seen in another look)")
    if not 0 <= settings.text_shift < cfg.max_text:
        raise UserError(f"text_shift must be between 0 and {cfg.max_text - 1} (the model's max_text, less one)")
    _check_moves(extra, "[train]")
    moves = extra.get("moves", "intent")
    from tqdm import tqdm

    bar = (lambda it: tqdm(it, desc="preprocess", unit="session")) if progress else None
    grounded = cfg.grounding is not None
    kinds = list(extra.get("actions", []))
    if set(kinds) - set(cfg.action_types):
        raise UserError(f"[train] actions: {', '.join(sorted(set(kinds) - set(cfg.action_types)))} "
                        f"not among the model's actions ({', '.join(cfg.action_types)})")
    types = [cfg.action_types.index(k) for k in kinds]

    def transform(part: dict) -> dict:
        part = _only_actions(part, types) if types else part
        return precompute(model, part) if grounded else part

    key = "-".join([precompute_key(model) if grounded else "samples", *kinds]) if grounded or kinds else None
    parts = load_samples(paths, cfg, cache, bar, workers=int(extra.get("workers", 1)), shifts=shifts,
                         transform=transform if key else None, transform_key=key, moves=moves)
    tr, va = split_sessions(paths, float(extra.get("val_fraction", 0.1)), settings.seed)
    task_of = [session_task(paths[i]) for i in va]
    names = sorted({x for x in task_of if x})
    val_tasks = [np.full(len(parts[i]["labels"]), names.index(x) if x else -1)
                 for i, x in zip(va, task_of, strict=True) if parts[i]]
    train = concat([parts[i] for i in tr], consume=True)
    val = concat([parts[i] for i in va], consume=True)
    del parts
    n_val = len(val.get("labels", []))
    log(f"{len(paths)} sessions: {len(train.get('labels', []))} training samples, {n_val} validation samples")
    if settings.keep_best and 0 < n_val < MIN_VAL_TO_CHOOSE:
        settings.keep_best = False
        log(f"{n_val} held-out samples are too few (under {MIN_VAL_TO_CHOOSE}) to choose an epoch by: "
            "the last epoch is kept")
    settings.record = {"sessions": len(paths), "shifts": shifts, "moves": moves, "stage": stage["name"],
                       "init": init or stage["model"].get("init"), "reader": extra.get("reader"),
                       "actions": kinds}
    try:
        return fit(model, train, val, settings, out, resume=resume, progress=progress, log=log,
                   val_tasks=np.concatenate(val_tasks) if val_tasks else None, task_names=names)
    except TrainError as e:
        raise UserError(str(e)) from None


def run(stages: list[dict], sessions: list[str], out: str | Path, *, size: str | None = None,
        init: str | None = None, epochs: int | None = None, device: str = "cpu", seed: int | None = None,
        resume: bool = False, cache: str | Path | None = None, keep_state: bool = False, progress: bool = True,
        log=print) -> dict:
    """Every stage in order, each from the one before; the last writes ``out``, each earlier one
    ``out/stages/NAME``. A stage whose recipe sessions do not exist yet (a DAgger set made with an
    earlier stage's weights) stops the run with what to make; ``resume`` then skips every stage that
    finished (its folder holds ``training.json``) and continues. Samples are cached in
    ``cache`` (default: :func:`agent.training.dataset.default_cache_dir`). Once every stage has
    finished, the trainer's state (``checkpoint/`` in ``out`` and in each stage's folder: the last
    epoch's weights and the optimizer's state, which only ``resume`` of an interrupted run needs)
    is removed, unless ``keep_state``."""
    import shutil

    from agent.training.dataset import default_cache_dir

    out = Path(out)
    cache = Path(cache) if cache else default_cache_dir()
    summary: dict = {}
    wrote = []
    for i, stage in enumerate(stages):
        where = out if i == len(stages) - 1 else out / "stages" / stage["name"]
        if resume and (where / "training.json").is_file():  # finished in an earlier run
            log(f"stage {stage['name']}: finished before ({where}), kept")
            summary = json.loads((where / "training.json").read_text())
            wrote.append(where)
            init, size = str(where), None
            continue
        missing = [p for p in ([] if sessions else stage["data"].get("sessions", [])) if not Path(p).exists()]
        if missing:
            before = f" with the weights in {init}" if i else ""
            raise UserError(f"stage {stage['name']}: {missing[0]} does not exist yet; make it (the recipe's [data] "
                            f"commands{before}), then run again with --resume: finished stages are kept")
        summary = train_stage(stage, sessions, where, size=size, init=init, epochs=epochs, device=device,
                              seed=seed, resume=resume, cache=cache, progress=progress, log=log)
        wrote.append(where)
        init, size = str(where), None
    if not keep_state:
        for where in wrote:
            shutil.rmtree(where / "checkpoint", ignore_errors=True)
    return summary
