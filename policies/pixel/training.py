"""Behaviour cloning for the pixel family: a generic trainer over preprocessed sample arrays.

The trainer calls ``out = model(**batch)`` and steps on ``out.loss``: it knows no part of the
model by name. What a part needs precomputed (a frozen reader's reads, a template grounding's
matches) its grounding supplies (:func:`precompute`). Where samples come from (recorded sessions,
cached per session) is the caller's: ``agent.training`` turns sessions into these arrays.

Training is seeded and deterministic on CPU, checkpoints each epoch with optimizer state
(``out/checkpoint``: the last epoch's weights and the optimizer's state; ``resume`` continues),
and runs under bf16 autocast where the device computes bf16 natively (CUDA; CPUs with AVX512-BF16
or AMX; ``DW_PIXEL_DTYPE=float32`` turns it off). The weights kept (written to ``out``) are those of
the epoch with the best held-out *action accuracy* (type, pointer token(s), key, count and text span
all right), ties broken by the lower held-out loss; with ``keep_best`` off, or nothing held out,
the last epoch's. The summary names the kept epoch (``kept_epoch``) and its figures (``kept``).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from policies.pixel.codec import LABEL_FIELDS
from policies.pixel.configuration import PixelConfig
from policies.pixel.grounding import ReaderGrounding
from policies.pixel.hardware import inference_dtype
from policies.pixel.modeling import PixelModel
from policies.pixel.runtime import step_inputs

LABEL_ARRAYS = ("text_ids", "labels", "target_offsets")


class TrainError(ValueError):
    """Bad training input (no samples, a reader that does not fit, ...)."""


def arrays_for(cfg: PixelConfig) -> tuple[str, ...]:
    """The training arrays of a model with ``cfg``: its per-frame step inputs, the instruction's
    bytes, and the labels."""
    return step_inputs(cfg) + LABEL_ARRAYS


@dataclass
class TrainSettings:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    seed: int = 0
    device: str = "cpu"
    max_steps: int | None = None  # stop after this many optimizer steps (tests)
    time_budget_s: float | None = None  # fit the schedule into this many seconds (after epoch 1)
    keep_best: bool = True  # keep the epoch with the best held-out action accuracy
    train_only: tuple[str, ...] = ()  # parameter-name prefixes: train only these, keep every other weight
    text_shift: int = 0  # each sample's instruction takes positions from a random 0..text_shift on (not where, what)
    recolor: float = 0.0  # this share of samples seen in another look: pixels inverted or not, contrast pressed
    record: dict = field(default_factory=dict)  # what else the run was (saved in config.training)


# -- models ------------------------------------------------------------------------------------
KEY_HEAD = ("head_key.weight", "head_key.bias")  # a row per key combo (config.keys); combos are appended
def grow(model: PixelModel, config: PixelConfig) -> PixelModel:
    """A model of ``config`` holding every weight of ``model`` whose name and shape fit: a grounding or
    a refiner added to a trained model starts as the model without it (each part's own start)."""
    new = PixelModel(config)
    own, have = new.state_dict(), model.state_dict()
    keep = {k: v for k, v in have.items() if k in own and own[k].shape == v.shape}
    old_keys, new_keys = list(model.config.keys), list(config.keys)
    if len(new_keys) > len(old_keys) and new_keys[:len(old_keys)] == old_keys:  # combos appended: the old rows stay
        for k in KEY_HEAD:
            keep[k] = torch.cat([have[k], own[k][len(old_keys):]])
    new.load_state_dict(keep, strict=False)
    return new


def plain_config(model: PixelModel) -> dict:
    """``model``'s config as PixelConfig fields (without what transformers and training add)."""
    cfg = model.config.to_dict()
    for k in ("architectures", "model_type", "transformers_version", "training", "dtype"):
        cfg.pop(k, None)
    return cfg


def with_keys(model: PixelModel, keys: list[str]) -> PixelModel:
    """``model`` with ``keys`` appended to the key combos its key head chooses among: what it knew
    stays as it was, each new combo starts from a fresh row."""
    cfg = plain_config(model)
    cfg["actions"] = {**cfg["actions"], "keys": [*cfg["actions"]["keys"], *keys]}
    return grow(model, PixelConfig(**cfg))


def load_reader_weights(model: PixelModel, folder: str | Path) -> None:
    """Put a pretrained reader (``dw reader``) into a reader grounding."""
    from policies.pixel.reader import ReaderError, load_reader

    if not isinstance(model.grounding, ReaderGrounding):
        raise TrainError(f"{folder}: a reader is for a reader grounding; this model has none")
    try:
        rcfg, reader = load_reader(folder)
    except ReaderError as e:
        raise TrainError(f"{folder}: the reader does not fit the model's grounding ({e})") from None
    g, c = model.config.grounding, model.config
    have = {"stem": rcfg["stem"], "channels": rcfg["stem_channels"], "head": rcfg["head_width"],
            "tiles": rcfg.get("tile_pt", 64), "window": rcfg.get("window"), "window_px": rcfg.get("window_px")}
    want = {"stem": g["reader"]["stem"], "channels": g["reader"]["channels"], "head": g["reader"]["head"],
            "tiles": c.tile_pt, "window": g["window"], "window_px": g["window_px"]}
    wrong = [f"{k} {have[k]} (the grounding's: {want[k]})" for k in want if have[k] != want[k]]
    if wrong:
        raise TrainError(f"{folder}: the reader (of {have['tiles']}-point tiles) does not fit the model's grounding: " + "; ".join(wrong))
    try:
        model.grounding.reader.load_state_dict(reader.state_dict())
    except RuntimeError as e:
        raise TrainError(f"{folder}: the reader does not fit the model's grounding ({e})") from None


# -- precomputed grounding ---------------------------------------------------------------------
def precompute(model: PixelModel, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A session's samples with their ``read_glimpses`` replaced by what the grounding makes of them
    (fixed per sample: a reader is frozen, a template matcher learns nothing), so training never
    runs the reader nor keeps the windows in memory."""
    if "read_glimpses" not in data or not len(data.get("labels", ())):
        return data
    with torch.no_grad(), _compute(torch.device("cpu")):
        return model.grounding.precompute_samples(model, data)


def precompute_key(model: PixelModel) -> str:
    """What :func:`precompute` gives besides the samples depends on (the grounding's own account:
    a reader's weights and windows, a template's styles, and the arithmetic): part of a cache
    file's name, so a stage whose other layers changed reuses the cached reads."""
    h = hashlib.sha256(json.dumps(model.grounding.precompute_version(), sort_keys=True, default=str).encode())
    for name, v in sorted(model.grounding.state_dict().items()):
        if name.startswith("reader."):
            h.update(name.encode())
            h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# -- the loop ----------------------------------------------------------------------------------
def _compute(device: torch.device):
    """The numeric context of a training or validation pass: bf16 autocast where the device
    computes bf16 natively; on CPU the plain (math) attention kernel, whose backward pass at
    these short sequences is faster than the fused CPU kernel's."""
    from contextlib import ExitStack

    from torch.nn.attention import SDPBackend, sdpa_kernel

    stack = ExitStack()
    stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16,
                                       enabled=inference_dtype(device) == torch.bfloat16))
    if device.type == "cpu":
        stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
    return stack


def _batch(data: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[idx] for k, v in data.items()}


def _points(out, tokens: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(B, 2) normalised points for the given pointer tokens and in-box offsets."""
    b = out.boxes.gather(1, tokens[:, None, None].expand(-1, 1, 4))[:, 0].float()
    return b[:, :2] + offsets * (b[:, 2:] - b[:, :2])


@torch.no_grad()
def evaluate_offline(model: PixelModel, data: dict[str, torch.Tensor], batch_size: int = 256,
                     tasks: np.ndarray | None = None, task_names: list[str] | None = None) -> dict:
    """Held-out loss and accuracies: action type, pointer token(s), and the whole action.

    ``val_action_acc``: the fraction of samples whose every applicable head is right (type,
    pointer token(s), button count, key, text span). ``val_pt_err``: median distance in logical
    points between the decoded and the true point (pointer 0; ``val_pt1_err`` for drag ends).
    With ``tasks`` (a task index per sample) the same figures per task under ``per_task``."""
    model.eval()
    n = len(data["labels"])
    if n == 0:
        return {}
    tot = 0.0
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in ("type", "ptr0", "ptr1", "action", "err0", "err1",
                                                            "v0", "v1")}
    for s in range(0, n, batch_size):
        idx = torch.arange(s, min(n, s + batch_size), device=data["labels"].device)
        b = _batch(data, idx)
        out = model(**b)
        tot += float(out.loss) * len(idx)
        lab = {k: b["labels"][:, i] for i, k in enumerate(LABEL_FIELDS)}
        ok_type = out.type_logits.argmax(-1) == lab["type"]
        ok = ok_type.clone()
        for name, logits in (("count", out.count_logits), ("key", out.key_logits)):
            t = lab[name]
            ok &= (t < 0) | (logits.argmax(-1) == t)
        t = lab["span_start"]
        ok &= (t < 0) | ((out.span_start.argmax(-1) == t) & (out.span_end.argmax(-1) == lab["span_end"]))
        lw = b["screen"][:, 0].float() * 2560.0
        lh = b["screen"][:, 1].float() * 1440.0
        cols["type"].append(ok_type)
        for j in range(2):
            t = lab[f"ptr{j}"]
            valid = t >= 0
            pred = out.pointer_logits[:, j].argmax(-1)
            okp = pred == t
            ok &= ~valid | okp
            p_off = out.offsets[:, j].gather(1, pred[:, None, None].expand(-1, 1, 2))[:, 0].float().clamp(0, 1)
            p = _points(out, pred, p_off)
            q = _points(out, t.clamp(min=0), b["target_offsets"][:, j].float())
            cols[f"ptr{j}"].append(okp)
            cols[f"err{j}"].append(torch.hypot((p[:, 0] - q[:, 0]) * lw, (p[:, 1] - q[:, 1]) * lh))
            cols[f"v{j}"].append(valid)
        cols["action"].append(ok)
    c = {k: torch.cat(v).cpu() for k, v in cols.items()}

    def figures(sel: torch.Tensor) -> dict:
        r = {"samples": int(sel.sum()), "type_acc": float(c["type"][sel].float().mean()),
             "action_acc": float(c["action"][sel].float().mean())}
        for j in range(2):
            v = sel & c[f"v{j}"]
            if v.any():
                r[f"ptr{j}_acc"] = float(c[f"ptr{j}"][v].float().mean())
                r[f"pt{j}_err"] = float(c[f"err{j}"][v].median())
        return r

    allf = figures(torch.ones(n, dtype=torch.bool))
    res = {"val_loss": tot / n, "val_type_acc": allf["type_acc"], "val_ptr_acc": allf.get("ptr0_acc", 0.0),
           "val_action_acc": allf["action_acc"], "val_pt_err": allf.get("pt0_err", 0.0)}
    if "pt1_err" in allf:
        res["val_pt1_err"] = allf["pt1_err"]
    if tasks is not None and task_names:
        tt = torch.from_numpy(np.asarray(tasks))
        res["per_task"] = {name: figures(tt == i) for i, name in enumerate(task_names) if bool((tt == i).any())}
    return res


def _optimizer(model: PixelModel, s: TrainSettings) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.lr,
                             weight_decay=s.weight_decay, betas=(0.9, 0.98))


def recolor(global_view: torch.Tensor, glimpses: torch.Tensor, share: float,
            gen: torch.Generator, recent: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """A batch's pixels with ``share`` of its samples drawn in another look, the same for a
    sample's global view, glimpses and recent views (recent video): inverted (a light theme seen dark, a dark one light) half
    the time, and every one's contrast pressed toward its mean grey by a factor of 1 to 1/4 (a
    dark theme's field sits a few grey levels off its window). Where a box, field or text is stays
    where it is: the model learns the layout, not one theme's greys. A reader grounding's reads,
    made before training from the real pixels, stay as they are."""
    b = global_view.shape[0]
    pick = torch.rand(b, generator=gen) < share
    invert = torch.rand(b, generator=gen) < 0.5
    gain = 1.0 / (1.0 + 3.0 * torch.rand(b, generator=gen))
    if not pick.any():
        return {}
    dev = global_view.device
    pick, invert, gain = pick.to(dev), invert.to(dev), gain.to(dev)
    mean = global_view.float().mean(dim=(1, 2, 3))
    mean = torch.where(invert, 255.0 - mean, mean)

    def apply(x: torch.Tensor) -> torch.Tensor:
        shape = (b,) + (1,) * (x.dim() - 1)
        y = x.float()
        y = torch.where(invert.view(shape), 255.0 - y, y)
        y = mean.view(shape) + gain.view(shape) * (y - mean.view(shape))
        return torch.where(pick.view(shape), y.round().clamp(0, 255).to(torch.uint8), x)

    out = {"global_view": apply(global_view), "glimpses": apply(glimpses)}
    if recent is not None:
        out["recent"] = apply(recent)
    return out


def fit(model: PixelModel, train: dict[str, np.ndarray], val: dict[str, np.ndarray], s: TrainSettings,
        out: str | Path, *, resume: bool = False, progress: bool = True, log: Callable[[str], None] = print,
        val_tasks: np.ndarray | None = None, task_names: list[str] | None = None) -> dict:
    """Train ``model`` on the sample arrays ``train`` (held out: ``val``), write a Hugging Face model
    folder to ``out`` (and ``out/checkpoint`` each epoch), return a summary."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(s.seed)
    np.random.seed(s.seed)
    torch.manual_seed(s.seed)
    device = torch.device(s.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest convolutions once
    if not train or not len(train.get("labels", ())):
        raise TrainError("the sessions hold no actions to learn from")
    if not resume and model.untie_match_kernels(torch.Generator().manual_seed(s.seed)):
        log("match kernels: the mix was all zero (every kernel alike); drew it at random to untie them")
    for name, p in model.named_parameters():
        if s.train_only and not name.startswith(s.train_only):
            p.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise TrainError(f"no trainable parameter name starts with {', '.join(s.train_only)}")

    def to_dev(d: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v).to(device) for k, v in d.items()}

    train_t, val_t = to_dev(train), to_dev(val) if val else {}
    n = len(train_t["labels"])
    model = model.to(device)
    steps_per_epoch = max(1, math.ceil(n / s.batch_size))
    epochs = s.epochs
    total_steps = steps_per_epoch * epochs
    if s.max_steps is not None:
        total_steps = min(total_steps, s.max_steps)
    sched_total = [total_steps]  # shortened after epoch 1 when a time budget is given
    opt = _optimizer(model, s)
    warm = min(s.warmup_steps, max(1, total_steps // 10))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        p = (step - warm) / max(1, sched_total[0] - warm)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    ckpt = out / "checkpoint"
    start_epoch, step, history = 0, 0, []
    if resume and (ckpt / "trainer_state.pt").is_file():
        state = torch.load(ckpt / "trainer_state.pt", map_location=device, weights_only=False)
        model.load_state_dict(PixelModel.from_pretrained(str(ckpt)).state_dict())
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, step, history = state["epoch"], state["step"], state["history"]
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed from {ckpt} after epoch {start_epoch}")
    elif resume:
        log(f"nothing to resume ({ckpt} holds no trainer state): training from the start")
    gen = torch.Generator().manual_seed(s.seed)
    for _ in range(start_epoch):  # the same shuffles as an uninterrupted run
        torch.randperm(n, generator=gen)
    t0 = time.time()
    done = s.max_steps is not None and step >= s.max_steps
    best: tuple[tuple[float, float], int, dict] | None = None
    for epoch in range(start_epoch, s.epochs):
        if done or epoch >= epochs:
            break
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        losses = []
        pbar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{s.epochs}", unit="step",
                    disable=not progress, leave=False)
        for i in pbar:
            b = _batch(train_t, perm[i * s.batch_size:(i + 1) * s.batch_size])
            g = torch.Generator().manual_seed(s.seed * 1_000_003 + step)  # the step's own: a resumed run draws the same
            if s.text_shift:
                b["text_pos_shift"] = torch.randint(0, s.text_shift + 1, (len(b["labels"]),), generator=g).to(device)
            if s.recolor:
                b.update(recolor(b["global_view"], b["glimpses"], s.recolor, g, b.get("recent")))
            with _compute(device):
                loss = model(**b).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            if i % 10 == 0:
                pbar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
            if s.max_steps is not None and step >= s.max_steps:
                done = True
                break
        rec = {"epoch": epoch + 1, "step": step, "train_loss": float(np.mean(losses)) if losses else None,
               "seconds": round(time.time() - t0, 1)}
        if val_t:
            with _compute(device):
                rec.update(evaluate_offline(model, val_t, tasks=val_tasks, task_names=task_names))
            rank = (rec["val_action_acc"], -rec["val_loss"])
            if s.keep_best and (best is None or rank > best[0]):
                best = (rank, epoch + 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
        history.append(rec)
        log(json.dumps({k: v for k, v in rec.items() if k != "per_task"}))
        if s.time_budget_s and epoch == start_epoch and epochs > epoch + 1:
            per_epoch = max(1e-3, time.time() - t0)
            fit_epochs = max(epoch + 1, int(s.time_budget_s // per_epoch))
            if fit_epochs < epochs:
                epochs = fit_epochs
                sched_total[0] = steps_per_epoch * epochs
                log(f"time budget {s.time_budget_s:.0f}s: {epochs} epochs of {per_epoch:.1f}s")
        model.save_pretrained(ckpt)  # with optimizer state: resume continues from here
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch + 1,
                    "step": step, "history": history, "torch_rng": torch.get_rng_state()},
                   ckpt / "trainer_state.pt")
    best_epoch = None
    if best is not None:
        model.load_state_dict(best[2])
        best_epoch = best[1]
        log(f"keeping epoch {best_epoch} of {len(history)} (held-out action accuracy {best[0][0]:.3f}, "
            f"loss {-best[0][1]:.3f})")
    elif history:
        log(f"keeping the last epoch ({history[-1]['epoch']})")
    kept_epoch = best_epoch if best_epoch is not None else (history[-1]["epoch"] if history else None)
    kept = next((h for h in history if h["epoch"] == kept_epoch), None)
    model.config.training = {"samples": n, "epochs": epochs, "seed": s.seed, "lr": s.lr, "batch_size": s.batch_size,
                             "best_epoch": best_epoch, "kept_epoch": kept_epoch, "train_only": list(s.train_only),
                             **({"text_shift": s.text_shift} if s.text_shift else {}),
                             **({"recolor": s.recolor} if s.recolor else {}), **s.record}
    model.save_pretrained(out)
    summary = {"out": str(out), "size": model.config.size_name, "parameters": sum(p.numel() for p in model.parameters()),
               "train_samples": n, "val_samples": len(val.get("labels", [])) if val else 0, "steps": step,
               "best_epoch": best_epoch, "best": next((h for h in history if h["epoch"] == best_epoch), None),
               "kept_epoch": kept_epoch, "kept": kept, "history": history, **s.record}
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
