"""Behaviour cloning for the pixel-transformer family, from any recorded sessions.

Each action event (``human`` or ``policy``) becomes one sample, paired with the frame the event
names (the last frame shown before the action: no peeking at its effect), the history of the
actions before it, the cursor (from ``cursor0`` in ``session.json`` when the recorder stored it,
then the previous pointer actions) and the instruction. A DAgger session (``dw demos --dagger``:
a policy drove, the expert labelled each state) instead gives one sample per expert label, with
the actions that really ran as its history. Samples are preprocessed once and cached
per session (an ``.npz`` keyed by the session's files and the preprocessing settings), so an
epoch only reads arrays. Training is seeded and deterministic on CPU, checkpoints each epoch
with optimizer state (``--resume`` continues), and uses a GPU when given one. It runs under bf16
autocast where the device computes bf16 natively (CUDA; CPUs with AVX512-BF16 or AMX, where a
step takes about 0.6x the float32 time; ``DW_PIXEL_DTYPE=float32`` turns it off). ``init``
starts from a checkpoint's weights (fine-tuning a bundled policy on new sessions).

Augmentation: with ``shifts`` > 0 each action also yields samples whose glimpse tile grid is
shifted by a few cells (:class:`Preprocessor` ``shift``), so targets appear at every phase inside
a glimpse. The weights kept are those of the epoch with the best held-out *action accuracy*
(type, pointer token(s), key, count and text span all right), not the last epoch's.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from policies.actions import Drag
from policies.pixel.codec import LABEL_FIELDS, NO_WORD, action_label, history_features, last_type_end
from policies.pixel.config import PixelConfig
from policies.pixel.model import READER_STEMS, PixelModel, word_position
from policies.pixel.policy import inference_dtype
from policies.pixel.preprocess import Preprocessor, encode_text
from policies.pixel.runtime import step_inputs

CACHE_VERSION = 7  # bumped whenever a cached sample changes (7: NO_WORD where a demo names no word for a step)
MATCH_REACH = 3  # a new reading model spreads each word's match this many tiles around it
PRE_FIELDS = ("global_w", "global_h", "patch", "cell_pt", "tile_pt", "glimpse_px", "max_glimpses",
              "content_threshold", "max_text", "history", "action_types", "buttons", "keys", "scroll_max",
              "wait_bins", "match", "match_phases", "match_window", "match_window_px")


def arrays_for(cfg: PixelConfig) -> tuple[str, ...]:
    """The training arrays of a model with ``cfg``: its per-frame step inputs (a reading model's
    include the shifted glimpse copies), the instruction's bytes, and the labels."""
    return step_inputs(cfg) + ("text_ids", "labels", "offsets")


class TrainError(ValueError):
    """Bad training input (no sessions, unreadable session, ...)."""


def find_sessions(paths: Iterable[str | Path]) -> list[Path]:
    """Session folders among ``paths`` (each a session or a folder searched recursively), sorted."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise TrainError(f"{p}: no such file or folder")
        if (p / "session.json").is_file():
            out.append(p)
        else:
            out.extend(sorted(q.parent for q in p.rglob("session.json")))
    out = sorted(set(out))
    if not out:
        raise TrainError("no sessions found (a session is a folder with session.json)")
    return out


def _cache_key(session: Path, cfg: PixelConfig, shifts: int = 0) -> str:
    h = hashlib.sha256()
    h.update(f"{CACHE_VERSION}:{shifts}".encode())
    h.update(str(session.resolve()).encode())
    for name in ("session.json", "events.jsonl", "video.mkv"):
        f = session / name
        if f.exists():
            st = f.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(json.dumps({k: getattr(cfg, k) for k in PRE_FIELDS}, sort_keys=True).encode())
    return h.hexdigest()[:24]


def shift_set(cfg: PixelConfig, shifts: int, seed: int) -> list[tuple[int, int]]:
    """Tile-grid shifts (in cells) for one session: (0, 0) and ``shifts`` seeded others."""
    per = max(1, cfg.tile_pt // cfg.cell_pt)
    rng = random.Random(seed)
    out = [(0, 0)]
    while len(out) < 1 + shifts and len(out) < per * per:
        s = (rng.randrange(per), rng.randrange(per))
        if s not in out:
            out.append(s)
    return out


def session_samples(session_dir: Path, cfg: PixelConfig, pre: Preprocessor | None = None,
                    shifts: int = 0) -> dict[str, np.ndarray]:
    """Preprocess every action of one session into training arrays (see :func:`arrays_for`).

    With ``shifts`` > 0 every action gives ``1 + shifts`` samples: the unshifted tile grid and
    ``shifts`` shifted ones (seeded by the session's name, so the cache is deterministic).
    """
    # agent depends on policies, not the reverse: import late
    from agent.session import EXPERT_LABEL, EXPERT_TARGET, open_session

    s = open_session(session_dir)
    pre = pre or Preprocessor(cfg)
    seed = int(hashlib.sha256(Path(session_dir).name.encode()).hexdigest()[:8], 16)
    pres = [pre] + [Preprocessor(cfg, shift=sh) for sh in shift_set(cfg, shifts, seed)[1:]]
    executed = s.actions(("human", "policy"))
    labels = [e for e in s.events if e.source == "system" and e.action is not None
              and e.raw.get("event") == EXPERT_LABEL]
    # A DAgger session (``dw demos --dagger``) teaches its expert labels; the executed actions
    # are only the history. Any other session teaches its own actions.
    targets = labels or executed
    timeline = sorted(executed + labels, key=lambda e: e.line) if labels else executed
    learn = {id(e) for e in targets}
    named = {e.frame: e.raw.get("word") for e in s.events
             if e.source == "system" and e.raw.get("event") == EXPERT_TARGET}
    ids, raw = encode_text(s.instruction, cfg.max_text)
    want = {e.frame for e in targets if e.frame >= 0}
    views: dict[int, object] = {}
    if want:
        last = max(want)
        for frame in s.frames():
            if frame.index in want:
                views[frame.index] = [p(frame).copy() for p in pres]
            if frame.index >= last:
                break
    c0 = s.meta.get("cursor0")
    cursor = (float(c0[0]), float(c0[1]), 1.0) if isinstance(c0, list | tuple) and len(c0) == 2 else (0, 0, 0.0)
    rows: dict[str, list] = {k: [] for k in arrays_for(cfg)}
    history: list = []
    for e in timeline:
        a = e.action
        for v in views.get(e.frame, ()) if id(e) in learn else ():
            htypes, hpts = history_features(cfg, history, raw)
            lab, off = action_label(cfg, a, v.boxes, v.mask, raw, last_type_end(raw, history))
            if lab["ptr0"] >= 0:  # the word names where the first pointer goes: none for a key
                lab["word"] = word_position(raw, named.get(e.frame))
                if lab["word"] < 0 and named:  # this demo names targets, and no word names this one
                    lab["word"] = NO_WORD
            rows["global_view"].append(v.global_view)
            rows["glimpses"].append(v.glimpses)
            rows["boxes"].append(v.boxes)
            rows["glimpse_mask"].append(v.mask)
            if v.read_glimpses is not None:
                rows["read_glimpses"].append(v.read_glimpses)
            rows["screen"].append(v.screen)
            rows["cursor"].append(np.array(cursor, np.float32))
            rows["history_types"].append(htypes)
            rows["history_points"].append(hpts)
            rows["text_ids"].append(ids)
            rows["labels"].append(np.array([lab[k] for k in LABEL_FIELDS], np.int64))
            rows["offsets"].append(off)
        if e.source == "system":  # a label: what the expert would have done, not what happened
            continue
        history.append(a)
        if isinstance(a, Drag):
            cursor = (a.x2, a.y2, 1.0)
        elif a.point is not None:
            cursor = (a.point[0], a.point[1], 1.0)
    if not rows["labels"]:
        return {}
    return {k: np.stack(v) for k, v in rows.items()}


def _prep_worker(args: tuple[str, dict, str, int]) -> str:
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    sess, cfg_dict, f, shifts = args
    cfg = PixelConfig(**cfg_dict)
    _save_npz(Path(f), session_samples(Path(sess), cfg, shifts=shifts))
    return f


def _save_npz(f: Path, data: dict[str, np.ndarray]) -> None:
    """Write ``data`` to ``f`` whole or not at all (a temporary file, then a rename)."""
    tmp = f.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(f)


def _load_npz(f: Path | None) -> dict[str, np.ndarray] | None:
    """The arrays cached in ``f``; None if there is none or it cannot be read. A file read is
    marked used (its modification time), which :func:`prune_cache` goes by."""
    if f is None or not f.is_file():
        return None
    try:
        with np.load(f) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None
    try:
        os.utime(f)
    except OSError:  # a read-only cache is still a cache
        pass
    return data


def prune_cache(cache_dir: Path, max_bytes: int, dry_run: bool = False) -> dict:
    """Delete a sample cache's least recently used files (``dw train`` marks each file it reads)
    until the folder holds at most ``max_bytes``; files another version of the code wrote are
    never read again, so they go first as they age. Returns what it held and what went."""
    files = []
    for f in cache_dir.glob("*.npz"):
        try:
            st = f.stat()
        except OSError:  # removed meanwhile
            continue
        files.append((st.st_mtime, st.st_size, f))
    files.sort()
    total = sum(size for _, size, _ in files)
    held = {"files": len(files), "bytes": total, "removed_files": 0, "removed_bytes": 0}
    for _, size, f in files:
        if total <= max_bytes:
            break
        if not dry_run:
            f.unlink(missing_ok=True)
        total -= size
        held["removed_files"] += 1
        held["removed_bytes"] += size
    return held


def load_samples(sessions: list[Path], cfg: PixelConfig, cache_dir: Path | None,
                 progress: Callable[[Iterable], Iterable] | None = None,
                 workers: int = 1, shifts: int = 0,
                 transform: Callable[[dict], dict] | None = None,
                 transform_key: str | None = None) -> list[dict[str, np.ndarray]]:
    """Per-session sample arrays, from the cache where valid (``workers`` processes fill it), each
    passed through ``transform`` as it is loaded (so what it drops is never all in memory at once).
    With a ``transform_key`` (what the transform's output depends on, beyond the samples), its
    outputs are cached too, and a session whose output is cached is neither loaded nor transformed."""
    pre = Preprocessor(cfg)
    out = []

    def done_file(f: Path) -> Path | None:
        return f.with_name(f"{f.stem}-{transform_key}.npz") if transform is not None and transform_key else None

    def cached(f: Path) -> bool:
        """The session's samples, or the transform's output, are cached already."""
        g = done_file(f)
        return f.is_file() or (g is not None and g.is_file())

    if workers > 1 and cache_dir is not None:
        import multiprocessing as mp

        cache_dir.mkdir(parents=True, exist_ok=True)
        todo = [(str(s), cfg.to_dict(), str(cache_dir / f"{_cache_key(s, cfg, shifts)}.npz"), shifts)
                for s in sessions]
        todo = [t for t in todo if not cached(Path(t[2]))]
        if todo:
            with mp.get_context("spawn").Pool(workers) as pool:
                it = pool.imap_unordered(_prep_worker, todo, chunksize=4)
                for _ in (progress(it) if progress else it):
                    pass
    # with workers the pool did the preprocessing; loading is then worth a bar only when it does work
    it = progress(sessions) if progress and (workers <= 1 or transform is not None) else sessions
    for sess in it:
        f = cache_dir / f"{_cache_key(sess, cfg, shifts)}.npz" if cache_dir else None
        g = done_file(f) if f is not None else None
        done = _load_npz(g)
        if done is not None:
            out.append(done)
            continue
        data = _load_npz(f)
        if data is None:
            data = session_samples(sess, cfg, pre, shifts=shifts)
            if f is not None:
                f.parent.mkdir(parents=True, exist_ok=True)
                _save_npz(f, data)
        if transform is not None and data:
            data = transform(data)
            if g is not None:
                _save_npz(g, data)
        out.append(data)
    return out


def split_sessions(sessions: list[Path], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic train/validation split by session (indices)."""
    idx = list(range(len(sessions)))
    random.Random(seed).shuffle(idx)
    n_val = int(round(len(idx) * val_fraction)) if len(idx) > 1 else 0
    if val_fraction > 0 and len(idx) > 1:
        n_val = max(1, n_val)
    return sorted(idx[n_val:]), sorted(idx[:n_val])


def _release_freed() -> None:
    """Hand memory freed inside the C heap back to the OS (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def concat(parts: list[dict[str, np.ndarray]], consume: bool = False) -> dict[str, np.ndarray]:
    """The parts' arrays joined key by key. ``consume``: each part's array is dropped from it as
    soon as it is copied, so memory holds the samples about once, not twice (``dw train``'s
    peak: about 10,400 sessions of pixel-small's samples filled 24 GB before)."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    out = {}
    for k in list(parts[0]):
        arrays = [p[k] for p in parts]
        tail = arrays[0].shape[1:]
        if any(a.shape[1:] != tail for a in arrays):
            raise ValueError(f"samples of {k!r} differ in shape: {sorted({a.shape[1:] for a in arrays})}")
        joined = np.empty((sum(len(a) for a in arrays), *tail), np.result_type(*{a.dtype for a in arrays}))
        del arrays
        i = 0
        for j, p in enumerate(parts):
            a = p.pop(k) if consume else p[k]
            joined[i:i + len(a)] = a
            i += len(a)
            del a
            if consume and j % 64 == 63:
                _release_freed()
        out[k] = joined
    return out


@dataclass
class TrainConfig:
    size: str = "pixel-tiny"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "cpu"
    max_steps: int | None = None  # stop after this many optimizer steps (tests)
    overrides: dict = field(default_factory=dict)  # PixelConfig overrides (tests: smaller model)
    workers: int = 1  # preprocessing processes
    shifts: int = 0  # extra tile-grid-shifted samples per action (augmentation)
    time_budget_s: float | None = None  # fit the schedule into this many seconds (after epoch 1)
    keep_best: bool = True  # save the epoch with the best held-out action accuracy
    init: str | None = None  # checkpoint folder to start from (its config wins over size/overrides)
    tile_pt: int | None = None  # glimpse tile size in points (also over an init checkpoint: no weight depends on it)
    max_glimpses: int | None = None  # glimpses per frame (likewise: no weight depends on it)
    reader: str | None = None  # reader folder (policies.pixel.reader): its pretrained stem encodes the glimpses
    reader_lr_scale: float = 0.1  # the pretrained stem learns this much slower than the rest
    match_reader: str | None = None  # reader folder: the model reads glimpses with it and matches the instruction
    match_drawn: str | None = None  # "WxH" read windows (points): the model matches the instruction's words drawn
    match_at: bool = False  # a drawn-match model's offset heads learn where each drawing matched
    match_snap: bool = False  # a drawn-match model's offsets may move to where their word's drawing matched
    cell_offsets: bool = False  # each pointer also chooses a cell of a glimpse's middle map, and a point in it
    match_order: bool = False  # a reading model also compares the numbers it reads with the instruction's
    match_reach: int | None = None  # a reading model spreads a word's match this many tiles (learned kernels kept)
    match_where: bool = False  # a reading model's offset heads learn where in a glimpse their word was read
    match_where_near: bool = False  # ... and an offset per read window, chosen where it or its neighbours read it
    train_only: tuple[str, ...] = ()  # parameter-name prefixes: train only these, keep every other weight


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


def _labels(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    lab = b["labels"]
    return {k: lab[:, i] for i, k in enumerate(LABEL_FIELDS)}


def _model_inputs(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in b.items() if k not in ("labels", "offsets")}


def _points(out, tokens: torch.Tensor, offsets: torch.Tensor, j: int) -> torch.Tensor:
    """(B, 2) normalised points of pointer ``j`` for the given tokens and in-box offsets."""
    b = out.boxes.gather(1, tokens[:, None, None].expand(-1, 1, 4))[:, 0].float()
    return b[:, :2] + offsets * (b[:, 2:] - b[:, :2])


@torch.no_grad()
def evaluate_offline(model: PixelModel, data: dict[str, torch.Tensor], batch_size: int = 256,
                     tasks: np.ndarray | None = None, task_names: list[str] | None = None) -> dict:
    """Held-out loss and accuracies: action type, pointer token(s), and the whole action.

    ``val_action_acc``: the fraction of samples whose every applicable head is right (type,
    pointer token(s), button count, key, text span). ``val_pt_err``: median distance in logical
    points between the decoded and the true point (pointer 0; ``val_pt1_err`` for drag ends).
    With ``tasks`` (a task index per sample) the same figures per task under ``per_task``.
    """
    from policies.pixel.codec import loss as pixel_loss

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
        out = model(**_model_inputs(b))
        lab = _labels(b)
        lo, _ = pixel_loss(out, lab, b["offsets"])
        tot += float(lo) * len(idx)
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
            tk = t.clamp(min=0)
            p_off = out.offsets[:, j].gather(1, pred[:, None, None].expand(-1, 1, 2))[:, 0].float().clamp(0, 1)
            p = _points(out, pred, p_off, j)
            q = _points(out, tk, b["offsets"][:, j].float(), j)
            err = torch.hypot((p[:, 0] - q[:, 0]) * lw, (p[:, 1] - q[:, 1]) * lh)
            cols[f"ptr{j}"].append(okp)
            cols[f"err{j}"].append(err)
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


def session_task(session: Path) -> str:
    """The virtual task a session recorded (``desktop.task`` in session.json), or ``""``."""
    try:
        meta = json.loads((session / "session.json").read_text())
    except (OSError, ValueError):
        return ""
    d = meta.get("desktop") if isinstance(meta, dict) else None
    return str(d.get("task", "")) if isinstance(d, dict) else ""


def with_reader(model: PixelModel, reader: str | Path) -> PixelModel:
    """``model`` with its glimpse stem replaced by a pretrained reader's (a fresh glimpse
    projection; every other weight kept)."""
    from policies.pixel.reader import ReaderError, load_reader_stem

    try:
        rcfg, weights = load_reader_stem(reader)
    except ReaderError as e:
        raise TrainError(str(e)) from None
    cfg = PixelConfig(**model.config.to_dict())
    if rcfg.get("window"):
        raise TrainError(f"{reader}: a reader of read windows, not of glimpses: give it as --match-reader")
    if rcfg["glimpse_px"] != cfg.glimpse_px:
        raise TrainError(f"{reader}: the reader reads {rcfg['glimpse_px']}-pixel glimpses, the model "
                         f"takes {cfg.glimpse_px}-pixel ones")
    cfg.stem, cfg.stem_channels = rcfg["stem"], rcfg["stem_channels"]
    new = PixelModel(cfg)
    keep = {k: v for k, v in model.state_dict().items() if not k.startswith(("stem.", "glimpse_proj."))}
    new.load_state_dict(keep, strict=False)
    new.stem.load_state_dict(weights)
    return new


def with_match_reader(model: PixelModel, reader: str | Path) -> PixelModel:
    """``model`` made a reading model (``PixelConfig.match``): a pretrained reader, frozen, names
    each glimpse's word for the pointer to match against the instruction. Every weight of
    ``model`` is kept; the match layers start where the pointer is as before, plus the match."""
    from policies.pixel.reader import ReaderError, load_reader

    try:
        rcfg, reader_model = load_reader(reader)
    except ReaderError as e:
        raise TrainError(str(e)) from None
    cfg = PixelConfig(**model.config.to_dict())
    if rcfg["glimpse_px"] != cfg.glimpse_px or rcfg["stem"] not in READER_STEMS:
        raise TrainError(f"{reader}: a {rcfg['stem']} reader of {rcfg['glimpse_px']}-pixel glimpses; the model "
                         f"needs a {' or '.join(READER_STEMS)} stem for {cfg.glimpse_px}-pixel ones")
    if rcfg.get("window") and rcfg.get("tile_pt") != cfg.tile_pt:
        raise TrainError(f"{reader}: its windows are centred on quarters of {rcfg.get('tile_pt')}-point tiles; "
                         f"the model's tiles are {cfg.tile_pt} points")
    cfg.match, cfg.match_channels, cfg.match_head = True, rcfg["stem_channels"], rcfg["head_width"]
    cfg.match_stem = rcfg["stem"]
    cfg.match_window, cfg.match_window_px = rcfg.get("window"), rcfg.get("window_px")
    cfg.match_per_phase = cfg.match_per_phase and not cfg.match_window
    cfg.match_reach = cfg.match_reach or MATCH_REACH
    new = PixelModel(cfg)
    keep = {k: v for k, v in model.state_dict().items() if not k.startswith("reader.")}
    new.load_state_dict(keep, strict=False)
    new.reader.load_state_dict(reader_model.state_dict())
    return new


def parse_window(text: str) -> tuple[int, int]:
    """``"64x32"`` -> (64, 32): a read window's width and height in points."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise TrainError(f"a read window is WxH points (e.g. 64x32), not {text!r}") from None
    if w < 8 or h < 8:
        raise TrainError(f"a read window of {w}x{h} points is too small to hold a word")
    return w, h


def with_drawn_match(model: PixelModel, window: tuple[int, int], drawn: list | None = None) -> PixelModel:
    """``model`` made a drawn-match model (``PixelConfig.match_drawn``): no reader; each
    instruction word is drawn (``drawn``: ``[font, size, underlined]`` ways, MiniWoB++'s by
    default) and matched against four ``window`` (w, h points) read windows per glimpse. A reading
    model keeps its match layers (its reader goes); any other model gets them, starting where its
    pointer is, plus the match, and a match reach of ``MATCH_REACH`` tiles if it had none."""
    from policies.pixel.drawn import MINIWOB_DRAWN

    cfg = PixelConfig(**model.config.to_dict())
    if cfg.match_order:
        raise TrainError("the model compares numbers a reader reads (match_order): a drawn-match model has no reader")
    cfg.match, cfg.match_drawn = True, [list(v) for v in (drawn or MINIWOB_DRAWN)]
    cfg.match_window, cfg.match_window_px = [int(v) for v in window], [int(v) for v in window]
    cfg.match_per_phase = False
    cfg.match_reach = cfg.match_reach or MATCH_REACH
    new = PixelModel(PixelConfig(**cfg.to_dict()))
    keep = {k: v for k, v in model.state_dict().items() if not k.startswith("reader.")}
    new.load_state_dict(keep, strict=False)  # layers it did not have start as if absent
    return new


def _with_reading_layer(model: PixelModel, flag: str, needs: str) -> PixelModel:
    """``model`` with the reading feature ``flag`` (a ``PixelConfig`` flag whose layer starts at
    zero) turned on: every weight is kept, so the model starts acting as before. ``needs``: why
    the feature needs a reader, for the error when the model has none."""
    if not model.config.match:
        raise TrainError(f"{flag} {needs}: the model needs a reader (--match-reader)")
    return _with_layer(model, flag)


def _with_layer(model: PixelModel, flag: str) -> PixelModel:
    """``model`` with the ``PixelConfig`` flag ``flag`` turned on, every weight it had kept (new
    layers start as their ``__init__`` sets them); a config that refuses the flag is a TrainError."""
    if getattr(model.config, flag):
        return model
    try:
        new = PixelModel(PixelConfig(**{**model.config.to_dict(), flag: True}))
    except ValueError as e:
        raise TrainError(str(e)) from None
    new.load_state_dict(model.state_dict(), strict=False)
    return new


def with_match_order(model: PixelModel) -> PixelModel:
    """A reading model that also compares the numbers it reads with the instruction's
    (``PixelConfig.match_order``), starting as before."""
    return _with_reading_layer(model, "match_order", "compares what a reader reads")


def _with_drawn_layer(model: PixelModel, flag: str, needs: str) -> PixelModel:
    """:func:`_with_reading_layer` for a feature that uses where drawn matches were found."""
    if not model.config.match_drawn:
        raise TrainError(f"{flag} {needs}: the model needs --match-drawn")
    return _with_reading_layer(model, flag, needs)


def with_match_at(model: PixelModel) -> PixelModel:
    """A drawn-match model whose offset heads also learn where each window's drawing of their word
    matched (``PixelConfig.match_at``), starting as before."""
    return _with_drawn_layer(model, "match_at", "places what drawn matches found")


def with_match_snap(model: PixelModel) -> PixelModel:
    """A drawn-match model whose offsets may move to where their word's drawing matched
    (``PixelConfig.match_snap``); every weight is kept, and the moves start small."""
    return _with_drawn_layer(model, "match_snap", "moves offsets to what drawn matches found")


def with_cell_offsets(model: PixelModel) -> PixelModel:
    """A model whose pointers also choose a cell of each glimpse's middle feature map
    (``PixelConfig.cell_offsets``); every weight is kept, and no point moves until a cell is trusted."""
    return _with_layer(model, "cell_offsets")


def with_match_where(model: PixelModel) -> PixelModel:
    """A reading model whose offset heads also learn where inside each glimpse their word was read
    (``PixelConfig.match_where``), starting as before."""
    return _with_reading_layer(model, "match_where", "places what a reader reads")


def with_match_where_near(model: PixelModel) -> PixelModel:
    """A reading model whose offset heads also learn a correction per read window, chosen by where
    their glimpse or the ones around it read their word (``PixelConfig.match_where_near``; turns
    ``match_where`` on too), starting as before."""
    if not model.config.match_reach:
        raise TrainError("match_where_near spreads over the match reach: the model has none (--match-reach)")
    return _with_reading_layer(with_match_where(model), "match_where_near", "places what a reader reads")


def with_match_reach(model: PixelModel, reach: int) -> PixelModel:
    """A reading model whose match spreads ``reach`` tiles around a word instead of
    ``config.match_reach``: each learned kernel keeps its weights at the offsets both reaches
    cover, and offsets only the wider one covers start at zero, so a wider model starts acting
    as before. A narrower one drops the outer offsets."""
    c = model.config
    if not c.match:
        raise TrainError("match_reach spreads what a reader reads: the model needs a reader (--match-reader)")
    if reach < 1:
        raise TrainError(f"match_reach must be at least 1, not {reach}")
    if reach == c.match_reach:
        return model
    new = PixelModel(PixelConfig(**{**c.to_dict(), "match_reach": reach}))
    state = model.state_dict()
    old = state.pop("match_kernel", None)
    new.load_state_dict(state, strict=False)
    if old is not None:
        r, n, m = c.match_reach, 2 * c.match_reach + 1, 2 * reach + 1
        grid = old.view(-1, n, n)
        k = min(r, reach)
        with torch.no_grad():
            kern = new.match_kernel.view(-1, m, m)
            kern.zero_()
            kern[:, reach - k:reach + k + 1, reach - k:reach + k + 1] = grid[:, r - k:r + k + 1, r - k:r + k + 1]
    return new


@torch.no_grad()
def precompute_match(model: PixelModel, data: dict[str, np.ndarray], batch_size: int = 64) -> dict[str, np.ndarray]:
    """Replace a reading model's ``read_glimpses`` by the match scores they give
    (:meth:`PixelModel.read_match`, float16), and by ``order`` (:meth:`PixelModel.order_of`) for a
    ``match_order`` model: the reader is frozen, so its scores are fixed per sample, and training
    then never runs it (nor keeps the copies in memory)."""
    if "read_glimpses" not in data:
        return data
    if model.config.match_drawn:  # no reader: the instruction's words drawn and matched (policies.pixel.drawn)
        from policies.pixel.drawn import match_of_samples

        data = dict(data)
        # the placements are kept for every drawn model, so turning match_at on later reads nothing again
        data["match"], data["match_pos"] = match_of_samples(model.config, data.pop("read_glimpses"),
                                                            data["glimpse_mask"], data["text_ids"])
        return data
    model.eval()
    n = len(data["labels"])
    out = None
    order = np.zeros((n, 4), np.float32) if model.config.match_order else None
    for s in range(0, n, batch_size):
        sl = slice(s, min(n, s + batch_size))
        cache = model.encode_text(torch.from_numpy(data["text_ids"][sl]))
        glimpses = torch.from_numpy(data["glimpses"][sl])
        probs = model.read_probs_of(glimpses, torch.from_numpy(data["read_glimpses"][sl]))
        m = model.match_of(probs, glimpses.shape[1], cache)
        if out is None:
            out = np.zeros((n, *m.shape[1:-1], data["text_ids"].shape[1]), np.float16)
        out[sl, ..., :m.shape[-1]] = m.numpy()
        if order is not None:
            order[sl] = model.order_of(probs, cache).numpy()
    data = {k: v for k, v in data.items() if k != "read_glimpses"}
    data["match"] = out
    if order is not None:
        data["order"] = order
    return data


def _read_key(model: PixelModel) -> str:
    """What :func:`precompute_match` gives besides the samples: the reader's weights and which
    scores the model takes (per read or the best, and the number order)."""
    h = hashlib.sha256()
    if model.config.match_drawn:
        from policies.pixel import drawn

        h.update(json.dumps(["placements", model.config.match_drawn, drawn.FLAT, drawn.NCC_FLOOR,
                             drawn.NCC_FULL, drawn.MAX_WORDS]).encode())
        return "drawn-" + h.hexdigest()[:16]
    for name, v in sorted(model.reader.state_dict().items()):
        h.update(name.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    c = model.config
    h.update(json.dumps([c.match_per_phase, c.match_where, c.match_order]).encode())
    return "read-" + h.hexdigest()[:16]


def _held_out_rank(rec: dict) -> tuple[float, float]:
    """How an epoch ranks for ``keep_best``: held-out action accuracy, ties broken by the lower
    held-out loss (a run that trains the offset heads alone leaves the accuracy as it was)."""
    return rec["val_action_acc"], -rec["val_loss"]


def _optimizer(model: PixelModel, tc: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; a pretrained reader stem (``tc.reader``) at ``tc.reader_lr_scale`` of the rate, so
    the fresh layers around it do not wash out what it learned while they are still random."""
    stem = list(model.stem.parameters()) if tc.reader else []
    ids = {id(p) for p in stem}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids and p.requires_grad]}]
    if stem:
        groups.append({"params": stem, "lr": tc.lr * tc.reader_lr_scale})
    return torch.optim.AdamW(groups, lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.98))


def train(
    session_paths: list[str | Path],
    out: str | Path,
    tc: TrainConfig,
    *,
    resume: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Train a pixel policy; writes a Hugging Face model folder to ``out``; returns a summary."""
    from tqdm import tqdm

    from policies.pixel.codec import loss as pixel_loss

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(tc.seed)
    np.random.seed(tc.seed)
    torch.manual_seed(tc.seed)
    device = torch.device(tc.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest convolutions once
    if tc.init:
        from policies.pixel import load_model

        init_model = load_model(tc.init)
        cfg = init_model.config
    else:
        cfg = PixelConfig.for_size(tc.size, **tc.overrides)
    if tc.tile_pt is not None:
        if tc.tile_pt < cfg.cell_pt or tc.tile_pt % cfg.cell_pt:
            raise TrainError(f"tile_pt {tc.tile_pt} must be a positive multiple of the {cfg.cell_pt}-point cell")
        cfg.tile_pt = tc.tile_pt
    if tc.max_glimpses is not None:
        if tc.max_glimpses < 1:
            raise TrainError(f"max_glimpses must be at least 1, not {tc.max_glimpses}")
        cfg.max_glimpses = tc.max_glimpses
    model = init_model if tc.init else PixelModel(cfg)
    if tc.match_reader and tc.match_drawn:
        raise TrainError("--match-reader and --match-drawn are two ways to read: give one")
    # each asked-for change of the model, in this order; each keeps every weight it can
    for asked, change in ((tc.reader, lambda m: with_reader(m, tc.reader)),
                          (tc.match_reader, lambda m: with_match_reader(m, tc.match_reader)),
                          (tc.match_drawn, lambda m: with_drawn_match(m, parse_window(tc.match_drawn))),
                          (tc.match_order, with_match_order),
                          (tc.match_reach is not None, lambda m: with_match_reach(m, tc.match_reach)),
                          (tc.match_at, with_match_at),
                          (tc.match_snap, with_match_snap),
                          (tc.match_where, with_match_where),
                          (tc.match_where_near, with_match_where_near),
                          (tc.cell_offsets, with_cell_offsets)):
        if asked:
            model = change(model)
    cfg = model.config
    if cfg.match and not resume and model.untie_match_kernels(torch.Generator().manual_seed(tc.seed)):
        log("match kernels: the mix was all zero (every kernel alike); drew it at random to untie them")
    for name, p in model.named_parameters():
        if (cfg.match and name.startswith("reader.")) or (tc.train_only and not name.startswith(tc.train_only)):
            p.requires_grad_(False)  # a pretrained reader stays as it is; so does all but train_only
    if tc.train_only and not any(p.requires_grad for p in model.parameters()):
        raise TrainError(f"no parameter name starts with {', '.join(tc.train_only)}")
    sessions = find_sessions(session_paths)
    cache = Path(cache_dir) if cache_dir else out / "cache"
    desc = "preprocess, read" if cfg.match else "preprocess"
    bar = (lambda it: tqdm(it, desc=desc, unit="session")) if progress else None

    def read(part: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A reading model's reads become match scores session by session: the tiles it reads
        (four windows a glimpse, with match_window) are never all in memory at once."""
        with _compute(torch.device("cpu")):
            return precompute_match(model, part)

    parts = load_samples(sessions, cfg, cache, bar, workers=tc.workers, shifts=tc.shifts,
                         transform=read if cfg.match else None, transform_key=_read_key(model) if cfg.match else None)
    tr_idx, va_idx = split_sessions(sessions, tc.val_fraction, tc.seed)
    task_of = [session_task(sessions[i]) for i in va_idx]
    task_names = sorted({t for t in task_of if t})
    val_tasks = [np.full(len(parts[i]["labels"]), task_names.index(t) if t else -1)
                 for i, t in zip(va_idx, task_of, strict=True) if parts[i]]
    # consumed as they are joined: the samples are in memory once, not twice
    train_np = concat([parts[i] for i in tr_idx], consume=True)
    val_np = concat([parts[i] for i in va_idx], consume=True)
    del parts
    if not train_np:
        raise TrainError("the sessions hold no actions to learn from")
    val_tasks = np.concatenate(val_tasks) if val_np else None

    def to_dev(d: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v).to(device) for k, v in d.items()}

    train_t, val_t = to_dev(train_np), to_dev(val_np) if val_np else {}
    n = len(train_t["labels"])
    log(f"{len(sessions)} sessions: {n} training samples, {len(val_np.get('labels', []))} validation samples")

    model = model.to(device)
    steps_per_epoch = max(1, math.ceil(n / tc.batch_size))
    epochs = tc.epochs
    total_steps = steps_per_epoch * epochs
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)
    sched_total = [total_steps]  # shortened after epoch 1 when a time budget is given
    opt = _optimizer(model, tc)
    warm = min(tc.warmup_steps, max(1, total_steps // 10))

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
        model = PixelModel.from_pretrained(str(ckpt)).to(device)
        opt = _optimizer(model, tc)
        opt.load_state_dict(state["optimizer"])
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        sched.load_state_dict(state["scheduler"])
        start_epoch, step, history = state["epoch"], state["step"], state["history"]
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed from {ckpt} after epoch {start_epoch}")
    gen = torch.Generator().manual_seed(tc.seed)
    for _ in range(start_epoch):  # the same shuffles as an uninterrupted run
        torch.randperm(n, generator=gen)
    t0 = time.time()
    done = tc.max_steps is not None and step >= tc.max_steps
    best: tuple[float, int, dict] | None = None
    for epoch in range(start_epoch, tc.epochs):
        if done or epoch >= epochs:
            break
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        losses = []
        it = range(steps_per_epoch)
        pbar = tqdm(it, desc=f"epoch {epoch + 1}/{tc.epochs}", unit="step", disable=not progress, leave=False)
        for i in pbar:
            idx = perm[i * tc.batch_size:(i + 1) * tc.batch_size]
            b = _batch(train_t, idx)
            with _compute(device):
                outp = model(**_model_inputs(b))
            lo, parts_l = pixel_loss(outp, _labels(b), b["offsets"])
            opt.zero_grad(set_to_none=True)
            lo.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(lo.item())
            if i % 10 == 0:
                pbar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
            if tc.max_steps is not None and step >= tc.max_steps:
                done = True
                break
        rec = {"epoch": epoch + 1, "step": step, "train_loss": float(np.mean(losses)) if losses else None,
               "seconds": round(time.time() - t0, 1)}
        if val_t:
            with _compute(device):
                rec.update(evaluate_offline(model, val_t, tasks=val_tasks, task_names=task_names))
            rank = _held_out_rank(rec)
            if tc.keep_best and (best is None or rank > best[0]):
                best = (rank, epoch + 1,
                        {k: v.detach().clone() for k, v in model.state_dict().items()})
        history.append(rec)
        log(json.dumps({k: v for k, v in rec.items() if k != "per_task"}))
        if tc.time_budget_s and epoch == start_epoch and epochs > epoch + 1:
            per_epoch = max(1e-3, time.time() - t0)
            fit = max(epoch + 1, int(tc.time_budget_s // per_epoch))
            if fit < epochs:
                epochs = fit
                sched_total[0] = steps_per_epoch * epochs
                log(f"time budget {tc.time_budget_s:.0f}s: {epochs} epochs of {per_epoch:.1f}s")
        # checkpoint with optimizer state: --resume continues from here
        model.save_pretrained(ckpt)
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch + 1,
                    "step": step, "history": history, "torch_rng": torch.get_rng_state()},
                   ckpt / "trainer_state.pt")
    best_epoch = None
    if best is not None:
        model.load_state_dict(best[2])
        best_epoch = best[1]
        log(f"keeping epoch {best_epoch} (held-out action accuracy {best[0][0]:.3f}, loss {-best[0][1]:.3f})")
    model.config.training = {"sessions": len(sessions), "samples": n, "epochs": epochs, "seed": tc.seed,
                             "lr": tc.lr, "batch_size": tc.batch_size, "shifts": tc.shifts,
                             "best_epoch": best_epoch, "init": tc.init,
                             "reader": tc.reader, "match_reader": tc.match_reader, "match_drawn": tc.match_drawn, "match_at": tc.match_at, "match_snap": tc.match_snap,
                             "match_order": tc.match_order,
                             "match_reach": tc.match_reach, "match_where": tc.match_where,
                             "match_where_near": tc.match_where_near,
                             "train_only": list(tc.train_only)}
    model.save_pretrained(out)
    summary = {"out": str(out), "size": cfg.size_name or tc.size, "init": tc.init, "parameters": sum(p.numel() for p in model.parameters()),
               "sessions": len(sessions), "train_samples": n, "val_samples": len(val_np.get("labels", [])),
               "steps": step, "shifts": tc.shifts, "best_epoch": best_epoch,
               "best": next((h for h in history if h["epoch"] == best_epoch), None), "history": history}
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


