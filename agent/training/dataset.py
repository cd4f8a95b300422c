"""Recorded sessions as training samples for the pixel family, cached per session.

Each action event (``human`` or ``policy``) becomes one sample, paired with the frame the event
names (the last frame shown before the action: no peeking at its effect), the history of the
actions before it, the cursor (from ``cursor0`` in ``session.json`` when the recorder stored it,
then the previous pointer actions) and the instruction. A DAgger session (``dw demos --dagger``:
a policy drove, the expert labelled each state) instead gives one sample per expert label, with
the actions that really ran as its history. Samples are preprocessed once and cached per session
(an ``.npz`` keyed by the session's files and the preprocessing settings), so an epoch only reads
arrays; what the model's grounding makes of them (:func:`policies.pixel.training.precompute`) is
cached beside them.

Pointer moves (``moves``): a person's pointer trace (``dw record`` writes a ``move`` up to 10 times
a second while the mouse travels) is most of a recorded demo, and a model taught every point of it
learns to hover. With ``moves="intent"`` (the default) a ``human`` move teaches nothing when the
action after it is another move (a point on the way) or a pointer action that carries its own point
(click, mouse_down, mouse_up, drag, scroll: the pointer goes there anyway). So a run of moves is kept
only as its last move, and only where the pointer came to rest for a key, typing, ``done`` or the
demo's end (a hover). A dropped move leaves no trace in later samples either: no history entry and
no cursor change, and the action after a dropped run of moves is paired with the frame from before
the pointer set off (the run's first move's frame): a hovered widget lights up under a person's
pointer before the click, which the policy's screen never shows when it decides. At run time a
policy's history holds its own actions only, and the pointer sits
where its last pointer action left it; a cursor that had already travelled onto the target (as the
person's did before each click) would hand the model an answer it never gets when it runs.
A policy's or expert's moves are its own chosen actions and always kept; ``moves="all"`` keeps every
move, and the cursor follows all of them.

Augmentation: with ``shifts`` > 0 each action also yields samples whose glimpse tile grid is
shifted by a few cells (:class:`~policies.pixel.processing.Preprocessor` ``shift``), so targets
appear at every phase inside a glimpse.

The cache lives outside a run's output folder, in the user's cache (:func:`default_cache_dir`), so
sessions preprocessed once serve every later run; ``dw cache`` shows and prunes it.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import random
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from agent.sessions.format import EXPERT_LABEL, EXPERT_TARGET, open_session, read_events
from policies.actions import Drag, Key, Move
from policies.pixel.codec import LABEL_FIELDS, NO_WORD, action_label, history_features, last_type_end
from policies.pixel.configuration import PixelConfig
from policies.pixel.processing import Preprocessor, RecentViews, encode_text
from policies.pixel.training import arrays_for
from policies.pixel.words import word_position

CACHE_VERSION = 9  # bumped whenever a cached sample changes (9: a click after dropped moves shows the screen before them)
PRE_FIELDS = ("global_w", "global_h", "patch", "cell_pt", "tile_pt", "glimpse_px", "max_glimpses",
              "content_threshold", "max_text", "history", "actions", "read_window")
MOVES = ("intent", "all")  # which human pointer moves become samples (see the module's docstring)
POINTER_ACTIONS = ("click", "mouse_down", "mouse_up", "drag", "scroll")  # each carries its own point


def default_cache_dir() -> Path:
    """Where ``dw train`` caches samples unless told (``--cache``): ``samples`` in the user's cache
    folder, the one the encoder probes use (``$DW_CACHE_DIR``, else ``$XDG_CACHE_HOME/digital-worker``,
    else ``~/.cache/digital-worker`` on Linux)."""
    from encoders.ladder import cache_dir

    return cache_dir() / "samples"


def check_moves(moves: str) -> str:
    if moves not in MOVES:
        raise ValueError(f"moves must be one of {', '.join(MOVES)}, got {moves!r}")
    return moves


def redundant_moves(actions: list) -> set[int]:
    """Indices of the ``human`` moves in ``actions`` (executed events, in order) that
    ``moves="intent"`` drops: those whose next action is a move or a pointer action."""
    out = set()
    for i, e in enumerate(actions[:-1]):
        nxt = actions[i + 1].action
        if e.source == "human" and isinstance(e.action, Move) and (isinstance(nxt, Move) or nxt.type in POINTER_ACTIONS):
            out.add(i)
    return out


def _cache_key(session: Path, cfg: PixelConfig, shifts: int = 0, moves: str = "intent") -> str:
    h = hashlib.sha256()
    h.update(f"{CACHE_VERSION}:{shifts}:{moves}".encode())
    h.update(str(session.resolve()).encode())
    for name in ("session.json", "events.jsonl", "video.mkv"):
        f = session / name
        if f.exists():
            st = f.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    fields = {k: getattr(cfg, k) for k in PRE_FIELDS}
    if cfg.recent:  # recent video's past views (a one-frame config keeps the key it had before them)
        fields["recent"] = cfg.recent
    h.update(json.dumps(fields, sort_keys=True, default=list).encode())
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
                    shifts: int = 0, moves: str = "intent") -> dict[str, np.ndarray]:
    """Preprocess every action of one session into training arrays (see :func:`arrays_for`).

    With ``shifts`` > 0 every action gives ``1 + shifts`` samples: the unshifted tile grid and
    ``shifts`` shifted ones (seeded by the session's name, so the cache is deterministic).
    ``moves``: ``"intent"`` drops the human moves :func:`redundant_moves` names, ``"all"`` none.
    """
    check_moves(moves)
    s = open_session(session_dir)
    pre = pre or Preprocessor(cfg)
    seed = int(hashlib.sha256(Path(session_dir).name.encode()).hexdigest()[:8], 16)
    pres = [pre] + [Preprocessor(cfg, shift=sh) for sh in shift_set(cfg, shifts, seed)[1:]]
    executed = s.actions(("human", "policy"))
    seen: dict[int, int] = {}  # id(event) -> the frame its sample shows, where not its own
    if moves == "intent":
        gone, kept, start = redundant_moves(executed), [], None
        for i, e in enumerate(executed):  # a kept action after dropped moves: the screen before them
            if i in gone:
                start = e.frame if start is None else start
                continue
            if start is not None and start >= 0:
                seen[id(e)] = start
            kept.append(e)
            start = None
        executed = kept
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

    def frame_of(e) -> int:
        return seen.get(id(e), e.frame)

    want = {f for f in map(frame_of, targets) if f >= 0}
    views: dict[int, object] = {}
    recent: dict[int, np.ndarray] = {}  # recent video: each wanted frame's past views, as a policy sees them
    seen_views = RecentViews(cfg.recent) if cfg.recent else None
    if want:
        last = max(want)
        for frame in s.frames():
            if frame.index in want:
                views[frame.index] = [p(frame).copy() for p in pres]
            if seen_views is not None:  # a wanted frame's global view is already in its inputs
                gv = (views[frame.index][0].global_view if frame.index in want
                      else pre.global_only(frame.pixels, frame.screen.scale))
                if frame.index in want:
                    recent[frame.index] = seen_views.views(frame.t, gv)
                seen_views.add(frame.t, gv)
            if frame.index >= last:
                break
    c0 = s.meta.get("cursor0")
    cursor = (float(c0[0]), float(c0[1]), 1.0) if isinstance(c0, list | tuple) and len(c0) == 2 else (0, 0, 0.0)
    rows: dict[str, list] = {k: [] for k in arrays_for(cfg)}
    history: list = []
    for e in timeline:
        a = e.action
        for v in views.get(frame_of(e), ()) if id(e) in learn else ():
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
            if seen_views is not None:
                rows["recent"].append(recent[frame_of(e)])
            rows["text_ids"].append(ids)
            rows["labels"].append(np.array([lab[k] for k in LABEL_FIELDS], np.int64))
            rows["target_offsets"].append(off)
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


def _prep_worker(args: tuple[str, dict, str, int, str]) -> str:
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    sess, cfg_dict, f, shifts, moves = args
    cfg = PixelConfig(**cfg_dict)
    _save_npz(Path(f), session_samples(Path(sess), cfg, shifts=shifts, moves=moves))
    return f


def _save_npz(f: Path, data: dict[str, np.ndarray]) -> None:
    """Write ``data`` to ``f`` whole or not at all (a temporary file of this process's, then a rename:
    runs sharing the cache may write the same file at once)."""
    tmp = f.with_name(f"{f.stem}.{os.getpid()}.tmp.npz")
    f.parent.mkdir(parents=True, exist_ok=True)
    try:
        np.savez(tmp, **data)
        tmp.replace(f)
    finally:
        tmp.unlink(missing_ok=True)


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
                 transform_key: str | None = None, moves: str = "intent") -> list[dict[str, np.ndarray]]:
    """Per-session sample arrays, from the cache where valid (``workers`` processes fill it), each
    passed through ``transform`` as it is loaded (so what it drops is never all in memory at once).
    With a ``transform_key`` (what the transform's output depends on, beyond the samples), its
    outputs are cached instead of the samples, and a session whose output is cached is neither loaded
    nor transformed. (A reader grounding's samples are mostly their read windows, about 2.6 MB a
    sample, which only another reader would read again: it preprocesses the session anew.)"""
    check_moves(moves)
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
        todo = [(str(s), cfg.to_dict(), str(cache_dir / f"{_cache_key(s, cfg, shifts, moves)}.npz"), shifts, moves)
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
        f = cache_dir / f"{_cache_key(sess, cfg, shifts, moves)}.npz" if cache_dir else None
        g = done_file(f) if f is not None else None
        done = _load_npz(g)
        if done is not None:
            out.append(done)
            continue
        data = _load_npz(f)
        if data is None:
            data = session_samples(sess, cfg, pre, shifts=shifts, moves=moves)
            if f is not None and (g is None or not data):  # else the transform's output is cached (below)
                _save_npz(f, data)
        if transform is not None and data:
            data = transform(data)
            if g is not None:
                _save_npz(g, data)
                f.unlink(missing_ok=True)  # the samples a worker cached, or an earlier reader's: g serves
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
    parts = [p for p in parts if p and len(next(iter(p.values())))]  # a part with no samples adds none
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


def session_task(session: Path) -> str:
    """The virtual task a session recorded (``desktop.task`` in session.json), or ``""``."""
    try:
        meta = json.loads((session / "session.json").read_text())
    except (OSError, ValueError, RecursionError):  # unreadable, bad JSON, 4,300-digit ints, deep nesting
        return ""
    d = meta.get("desktop") if isinstance(meta, dict) else None
    return str(d.get("task", "")) if isinstance(d, dict) else ""


def session_keys(sessions: list[Path]) -> list[str]:
    """The key combos (``key`` actions) the sessions' events press, in order of first use."""
    seen = {e.action.keys: None for s in sessions for e in read_events(s, []) if isinstance(e.action, Key)}
    return list(seen)
