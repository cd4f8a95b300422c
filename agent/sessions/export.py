"""Sessions out to the formats this field trains on, and back: ``dw export`` and ``dw import``.

One row per recorded frame, in both formats:

- **Hugging Face ``datasets``** (``--format hf``; ``datasets.load_from_disk(DIR)``): columns
  ``episode_index``, ``frame_index``, ``timestamp`` (the frame's ``t`` on the session clock),
  ``image`` (PNG, lossless from the decoded frame), ``instruction``, ``actions`` (JSON: the
  ``human``/``policy`` actions issued while this frame was the last one shown, each
  ``{"t", "source", "action"}`` with coordinates normalised to [0, 1]), ``events`` (JSON: every event
  of the session at this frame, exactly as recorded), ``screen_width``, ``screen_height``,
  ``screen_scale``, ``session`` (the source folder's name) and ``session_meta`` (``session.json`` as
  JSON, on each episode's first row; "" elsewhere).
- **LeRobot** (``--format lerobot``): the LeRobot v3.0 layout written with pyarrow and PyAV —
  ``meta/info.json``, ``meta/tasks.parquet``, ``meta/episodes/chunk-000/file-000.parquet``,
  ``data/chunk-000/file-000.parquet`` and one MP4 per episode under
  ``videos/observation.image/chunk-CCC/file-FFF.mp4``. LeRobot assumes a constant frame rate: frame
  ``i`` of an episode sits at ``timestamp = i / fps`` (the video's pts), and the recorded session
  clock is kept in ``observation.time``. ``action.json`` and ``events.json`` are the JSON columns
  above; ``observation.screen`` is ``[width, height, scale]``. ``meta/stats.json`` (and each episode's
  ``stats/<feature>/<stat>`` columns) hold LeRobot's normalisation statistics, as lerobot 0.4.4 computes
  them (:func:`_stats`).

Events recorded before the first frame (``frame`` -1) travel on row 0, and the raw event keeps its
``frame``, so :func:`import_dataset` writes back the same events, the same frame count, and the
same normalised coordinates, as ordinary sessions every ``dw`` command (``dw train`` included) reads.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.errors import UserError
from agent.sessions.format import Session, SessionRecorder, open_session
from capture import Frame, Screen
from policies.actions import ActionError, parse_action

FORMATS = ("hf", "lerobot")
LEROBOT_VERSION = "v3.0"
VIDEO_KEY = "observation.image"
CHUNK = 1000  # files per chunk folder, as LeRobot writes them
ACTION_SOURCES = ("human", "policy")
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # lerobot's DEFAULT_QUANTILES: stats q01 ... q99
# session.json keys the recorder writes itself; the rest of an exported session.json goes back as ``extra``
_RECORDER_KEYS = {"schema", "created", "screen", "fps", "encoder", "video", "instruction", "policy", "desktop",
                  "host", "closed", "end_reason", "frames", "duration"}


def _require(module: str, extra: str = "export"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"this needs the `{module}` package: pip install 'digital-worker[{extra}]'") from None


def _frame_rows(session: Session) -> Iterator[tuple[Frame, list[dict], list[dict]]]:
    """``(frame, events at it, actions at it)`` for every frame of ``session``."""
    n = session.count_frames()
    by_frame: dict[int, list] = {}
    for ev in session.events:
        by_frame.setdefault(min(max(ev.frame, 0), max(n - 1, 0)), []).append(ev)
    for frame in session.frames():
        evs = by_frame.get(frame.index, [])
        yield (frame, [e.raw for e in evs],
               [{"t": e.t, "source": e.source, "action": e.action.to_json()}
                for e in evs if e.action is not None and e.source in ACTION_SOURCES])


def _open_all(paths: Iterable[str | Path]) -> list[Session]:
    sessions = []
    for p in paths:
        s = open_session(p)
        if s.count_frames() == 0:
            raise UserError(f"{p}: the session has no frames to export")
        sessions.append(s)
    if not sessions:
        raise UserError("no sessions to export")
    return sessions


def _fresh_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def _stats(x: np.ndarray, count: int | None = None) -> dict[str, np.ndarray]:
    """LeRobot's statistics of ``x`` (samples, ...) per column of its last axis (lerobot 0.4.4
    ``compute_stats.get_feature_stats``): min, max, mean, std, count (``len(x)`` unless given) and the
    quantiles as its 5000-bin histogram estimates them (the mean, for a single row). One deliberate
    difference: std is taken in float64, where 0.4.4 squares uint8 image samples and reports about 0
    (huggingface/lerobot#3682, fixed upstream)."""
    x = x.reshape(-1, x.shape[-1] if x.ndim > 1 else 1)
    f = x.astype(np.float64)
    st = {"min": x.min(0), "max": x.max(0), "mean": f.mean(0), "std": f.std(0),
          "count": np.array([len(x) if count is None else count])}
    for q in QUANTILES:
        st[f"q{round(q * 100):02d}"] = st["mean"].copy()
    if len(x) < 2:
        return st
    for j in range(x.shape[1]):
        edges = np.linspace(f[:, j].min() - 1e-10, f[:, j].max() + 1e-10, 5001)
        cum = np.cumsum(np.histogram(f[:, j], edges)[0])
        for q in QUANTILES:
            t = q * len(x)
            i = int(np.searchsorted(cum, t))
            st[f"q{round(q * 100):02d}"][j] = edges[i] if i in (0, len(cum)) else \
                edges[i] + (t - cum[i - 1]) / (cum[i] - cum[i - 1]) * (edges[i + 1] - edges[i])
    return st


def _aggregate(stats: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Episodes' statistics of one feature as one (lerobot's ``aggregate_feature_stats``): count-weighted
    means, quantiles and pooled variance."""
    w = np.array([s["count"][0] for s in stats], np.float64)
    w /= w.sum()
    avg = {k: np.tensordot(w, np.stack([s[k] for s in stats]), 1) for k in stats[0] if k == "mean" or k[0] == "q"}
    var = np.tensordot(w, np.stack([s["std"] ** 2 + (s["mean"] - avg["mean"]) ** 2 for s in stats]), 1)
    out = {**avg, "min": np.min([s["min"] for s in stats], 0), "max": np.max([s["max"] for s in stats], 0),
           "std": np.sqrt(var), "count": np.array([sum(s["count"][0] for s in stats)])}
    return {k: out[k] for k in stats[0]}


def export_hf(paths: Iterable[str | Path], out: str | Path, progress: Callable[[int], None] | None = None) -> dict:
    """Write the sessions as a ``datasets`` dataset (``save_to_disk``); returns a summary."""
    datasets = _require("datasets")
    datasets.disable_progress_bars()
    out = Path(out)
    sessions = _open_all(paths)
    _fresh_out(out)
    features = datasets.Features({
        "episode_index": datasets.Value("int64"), "frame_index": datasets.Value("int64"),
        "timestamp": datasets.Value("float64"), "image": datasets.Image(),
        "instruction": datasets.Value("string"), "actions": datasets.Value("string"),
        "events": datasets.Value("string"), "screen_width": datasets.Value("int32"),
        "screen_height": datasets.Value("int32"), "screen_scale": datasets.Value("float32"),
        "session": datasets.Value("string"), "session_meta": datasets.Value("string"),
    })
    # a list in gen_kwargs is split into shards, each generated on its own: each item carries its index
    episodes = [(ep, str(s.path)) for ep, s in enumerate(sessions)]

    def rows(episodes: list[tuple[int, str]]):
        for ep, path in episodes:
            s = open_session(path)
            for frame, events, actions in _frame_rows(s):
                ok, png = cv2.imencode(".png", frame.pixels[:, :, :3], [cv2.IMWRITE_PNG_COMPRESSION, 1])
                if not ok:  # pragma: no cover - OpenCV refuses only on impossible input
                    raise UserError(f"{path}: frame {frame.index} cannot be encoded as PNG")
                yield {"episode_index": ep, "frame_index": frame.index, "timestamp": frame.t,
                       "image": {"bytes": png.tobytes(), "path": None}, "instruction": s.instruction,
                       "actions": json.dumps(actions), "events": json.dumps(events),
                       "screen_width": s.screen.width, "screen_height": s.screen.height,
                       "screen_scale": s.screen.scale, "session": s.path.name,
                       "session_meta": json.dumps(s.meta, sort_keys=True) if frame.index == 0 else ""}
                if progress is not None:
                    progress(1)

    with tempfile.TemporaryDirectory(prefix="dw-export-") as cache:
        ds = datasets.Dataset.from_generator(rows, features=features, gen_kwargs={"episodes": episodes},
                                             cache_dir=cache, fingerprint=uuid.uuid4().hex)  # no hashing of rows
        ds.save_to_disk(str(out))
        frames = len(ds)
        del ds
    return {"format": "hf", "out": str(out), "episodes": len(sessions), "frames": frames,
            "events": sum(len(s.events) for s in sessions)}


def export_lerobot(paths: Iterable[str | Path], out: str | Path,
                   progress: Callable[[int], None] | None = None) -> dict:
    """Write the sessions in the LeRobot v3.0 layout (pyarrow + PyAV); returns a summary."""
    pa = _require("pyarrow")
    pq = _require("pyarrow.parquet")
    from encoders.mp4 import Mp4Writer

    out = Path(out)
    sessions = _open_all(paths)
    fps = max(1, round(sessions[0].fps or 10))
    _fresh_out(out)
    tasks: dict[str, int] = {}
    cols: dict[str, list] = {k: [] for k in ("timestamp", "frame_index", "episode_index", "index", "task_index",
                                              "observation.time", "observation.screen", "action.json",
                                              "events.json")}
    episodes: list[dict[str, Any]] = []
    image_stats = []
    video_info = None
    total = 0
    for ep, s in enumerate(sessions):
        task = tasks.setdefault(s.instruction, len(tasks))
        rel = f"videos/{VIDEO_KEY}/chunk-{ep // CHUNK:03d}/file-{ep % CHUNK:03d}.mp4"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        writer = Mp4Writer(out / rel, s.screen.width, s.screen.height, fps)
        start = total
        # LeRobot's image statistics: a sample of the episode's frames (compute_stats.sample_indices), each
        # downsampled to about 150 px on its long side when 300 px or more (auto_downsample_height_width)
        n = s.count_frames()
        k = max(min(n, 100), min(int(n**0.75), 10_000))
        picks = set(np.linspace(0, n - 1, k).round().astype(int).tolist())
        w, h = s.screen.width, s.screen.height
        step = 1 if max(w, h) < 300 else max(w, h) // 150
        sample = []
        for frame, events, actions in _frame_rows(s):
            writer.write(frame.pixels)
            if frame.index in picks:
                sample.append(frame.pixels[:h:step, :w:step, 2::-1].copy())  # BGRA -> RGB, not a view
            i = frame.index
            cols["timestamp"].append(i / fps)
            cols["frame_index"].append(i)
            cols["episode_index"].append(ep)
            cols["index"].append(total)
            cols["task_index"].append(task)
            cols["observation.time"].append(frame.t)
            cols["observation.screen"].append([s.screen.width, s.screen.height, s.screen.scale])
            cols["action.json"].append(json.dumps(actions))
            cols["events.json"].append(json.dumps(events))
            total += 1
            if progress is not None:
                progress(1)
        info = writer.close()
        image_stats.append({k: v if k == "count" else (v / 255).reshape(3, 1, 1)
                            for k, v in _stats(np.stack(sample), len(sample)).items()})
        if video_info is None:
            video_info = info
        elif (info["width"], info["height"]) != (video_info["width"], video_info["height"]):
            shutil.rmtree(out)
            raise UserError(f"{s.path}: {s.screen.width}x{s.screen.height} differs from the first session's "
                            "screen; a LeRobot dataset holds one image shape (export each size on its own)")
        length = total - start
        episodes.append({
            "episode_index": ep, "tasks": [s.instruction], "length": length,
            "data/chunk_index": 0, "data/file_index": 0, "dataset_from_index": start, "dataset_to_index": total,
            f"videos/{VIDEO_KEY}/chunk_index": ep // CHUNK, f"videos/{VIDEO_KEY}/file_index": ep % CHUNK,
            f"videos/{VIDEO_KEY}/from_timestamp": 0.0, f"videos/{VIDEO_KEY}/to_timestamp": length / fps,
            "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
            "dw/session": s.path.name, "dw/session_meta": json.dumps(s.meta, sort_keys=True),
            "dw/pad": info["pad"],
        })
    data_schema = pa.schema([
        ("timestamp", pa.float32()), ("frame_index", pa.int64()), ("episode_index", pa.int64()),
        ("index", pa.int64()), ("task_index", pa.int64()), ("observation.time", pa.float64()),
        ("observation.screen", pa.list_(pa.float32(), 3)), ("action.json", pa.string()),
        ("events.json", pa.string()),
    ])
    (out / "data/chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(cols, schema=data_schema), out / "data/chunk-000/file-000.parquet")
    (out / "meta/episodes/chunk-000").mkdir(parents=True)
    # tasks.parquet as pandas writes a DataFrame indexed by the task text (LeRobot reads it with pandas)
    names = list(tasks)
    tasks_table = pa.table({"task_index": pa.array([tasks[n] for n in names], pa.int64()),
                            "task": pa.array(names, pa.string())})
    pandas_meta = {"index_columns": ["task"], "column_indexes": [], "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
         "metadata": None},
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
         "metadata": None}], "pandas_version": "2.0.0"}
    tasks_table = tasks_table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    pq.write_table(tasks_table, out / "meta/tasks.parquet")
    assert video_info is not None
    h, w = video_info["height"], video_info["width"]
    features = {
        VIDEO_KEY: {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                    "info": {"video.height": h, "video.width": w, "video.codec": video_info["codec"],
                             "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                             "video.channels": 3, "has_audio": False}},
        "observation.time": {"dtype": "float64", "shape": [1], "names": None},
        "observation.screen": {"dtype": "float32", "shape": [3], "names": ["width", "height", "scale"]},
        "action.json": {"dtype": "string", "shape": [1], "names": None},
        "events.json": {"dtype": "string", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    info_json = {
        "codebase_version": LEROBOT_VERSION, "robot_type": "digital-worker", "total_episodes": len(sessions),
        "total_frames": total, "total_tasks": len(tasks), "chunks_size": CHUNK, "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200, "fps": fps, "splits": {"train": f"0:{len(sessions)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": features,
    }
    (out / "meta/info.json").write_text(json.dumps(info_json, indent=2) + "\n")
    # normalisation statistics, per episode (its stats/<feature>/<stat> columns) and over all (meta/stats.json)
    numeric = [k for k, f in features.items() if f["dtype"] not in ("string", "video")]
    per_episode = []
    for e, img in zip(episodes, image_stats, strict=True):
        lo, hi = e["dataset_from_index"], e["dataset_to_index"]
        st = {VIDEO_KEY: img, **{k: _stats(np.asarray(cols[k][lo:hi], features[k]["dtype"])) for k in numeric}}
        e.update({f"stats/{k}/{name}": v.tolist() for k, fs in st.items() for name, v in fs.items()})
        per_episode.append(st)
    stats = {k: {name: v.tolist() for name, v in _aggregate([st[k] for st in per_episode]).items()}
             for k in [VIDEO_KEY, *numeric]}
    (out / "meta/stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    pq.write_table(pa.Table.from_pylist(episodes), out / "meta/episodes/chunk-000/file-000.parquet")
    return {"format": "lerobot", "out": str(out), "episodes": len(sessions), "frames": total,
            "events": sum(len(s.events) for s in sessions), "fps": fps, "codec": video_info["codec"]}


def export_sessions(paths: Iterable[str | Path], out: str | Path, fmt: str, **kw) -> dict:
    if fmt == "hf":
        return export_hf(paths, out, **kw)
    if fmt == "lerobot":
        return export_lerobot(paths, out, **kw)
    raise UserError(f"unknown export format {fmt!r}; choose {' or '.join(FORMATS)}")


# -- back to sessions --------------------------------------------------------------------------------

def dataset_format(path: str | Path) -> str | None:
    """``"hf"`` for a ``save_to_disk`` folder, ``"lerobot"`` for the LeRobot layout, else None."""
    p = Path(path)
    if (p / "meta/info.json").is_file():
        return "lerobot"
    if (p / "dataset_info.json").is_file() and (p / "state.json").is_file():
        return "hf"
    return None


def _write_episode(out: Path, meta: dict, screen: Screen, frames: Iterable[tuple[float, np.ndarray]],
                   events: list[dict], source: str) -> Path:
    extra = {k: v for k, v in meta.items() if k not in _RECORDER_KEYS}
    extra["imported_from"] = source
    rec = SessionRecorder(out, screen, float(meta.get("fps") or 10), instruction=str(meta.get("instruction", "")),
                          policy=str(meta.get("policy", "")), desktop=meta.get("desktop") or {}, extra=extra)
    try:
        for i, (t, bgra) in enumerate(frames):
            rec.add_frame(Frame(np.ascontiguousarray(bgra[: screen.height, : screen.width]), t, i, screen))
        for raw in events:
            raw = dict(raw)
            t, src, frame = raw.pop("t"), raw.pop("source"), raw.pop("frame")
            action = raw.pop("action", None)
            try:
                act = parse_action(action) if action is not None else None
            except ActionError as e:
                raise UserError(f"{source}: an exported event's action is invalid: {e}") from None
            rec.add_event(t, src, act, frame=frame, **raw)
    except BaseException:
        rec.close("error")
        raise
    rec.close(str(meta.get("end_reason") or "finished"))
    return out


def _screen(meta: dict, width: int, height: int, scale: float) -> Screen:
    s = meta.get("screen") or {}
    return Screen(int(s.get("width", width)), int(s.get("height", height)), int(s.get("left", 0)),
                  int(s.get("top", 0)), float(s.get("scale", scale)))


def import_dataset(path: str | Path, out: str | Path, progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write every episode of an ``hf`` or ``lerobot`` export back as a session under ``out``
    (``out/<episode>-<session name>``); returns the session folders."""
    fmt = dataset_format(path)
    if fmt is None:
        raise UserError(f"{path}: not a dw export (no dataset_info.json, no meta/info.json)")
    out = Path(out)
    _fresh_out(out)
    return _import_hf(Path(path), out, progress) if fmt == "hf" else _import_lerobot(Path(path), out, progress)


def _import_hf(path: Path, out: Path, progress) -> list[Path]:
    datasets = _require("datasets")
    datasets.disable_progress_bars()
    ds = datasets.load_from_disk(str(path))
    missing = {"episode_index", "image", "events", "session_meta"} - set(ds.column_names)
    if missing:
        raise UserError(f"{path}: not a dw export (no column {sorted(missing)[0]!r})")
    rows_of: dict[int, list[int]] = {}
    for i, ep in enumerate(ds["episode_index"]):
        rows_of.setdefault(ep, []).append(i)
    written = []
    for ep, indices in sorted(rows_of.items()):
        part = ds.select(indices)
        first = part[0]
        meta = json.loads(first["session_meta"])
        screen = _screen(meta, first["screen_width"], first["screen_height"], first["screen_scale"])
        events = [e for row in part.select_columns(["events"]) for e in json.loads(row["events"])]

        def frames(part=part):
            for row in part.select_columns(["timestamp", "image"]):
                rgb = np.asarray(row["image"].convert("RGB"))
                if progress is not None:
                    progress(1)
                yield row["timestamp"], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)

        name = f"{ep:05d}-{first['session']}"
        written.append(_write_episode(out / name, meta, screen, frames(), events, f"{path}#{ep}"))
    return written


def _import_lerobot(path: Path, out: Path, progress) -> list[Path]:
    pq = _require("pyarrow.parquet")
    from encoders.mp4 import read_mp4

    info = json.loads((path / "meta/info.json").read_text())
    data = [r for f in sorted((path / "data").glob("*/*.parquet")) for r in pq.read_table(f).to_pylist()]
    eps = [r for f in sorted((path / "meta/episodes").glob("*/*.parquet")) for r in pq.read_table(f).to_pylist()]
    written = []
    for ep in eps:
        meta = json.loads(ep.get("dw/session_meta") or "{}")
        rows = [r for r in data if r["episode_index"] == ep["episode_index"]]
        rows.sort(key=lambda r: r["frame_index"])
        w, h, scale = rows[0]["observation.screen"]
        screen = _screen(meta, int(w), int(h), float(scale))
        events = [e for r in rows for e in json.loads(r["events.json"])]
        video = path / info["video_path"].format(video_key=VIDEO_KEY, chunk_index=ep[f"videos/{VIDEO_KEY}/chunk_index"],
                                                 file_index=ep[f"videos/{VIDEO_KEY}/file_index"])
        start = ep[f"videos/{VIDEO_KEY}/from_timestamp"]
        clock = [r["observation.time"] for r in rows]

        def frames(video=video, start=start, clock=clock):
            i = 0
            for t, bgra in read_mp4(video):
                if t < start - 1e-6 or i >= len(clock):
                    continue
                if progress is not None:
                    progress(1)
                yield clock[i], bgra
                i += 1

        name = f"{ep['episode_index']:05d}-{ep.get('dw/session') or 'episode'}"
        written.append(_write_episode(out / name, meta, screen, frames(), events, f"{path}#{ep['episode_index']}"))
    return written


def sessions_from_exports(paths: Iterable[str | Path], work_dir: str | Path) -> list[str]:
    """``paths`` with every ``dw export`` dataset among them replaced by its sessions, imported once into
    ``work_dir/<dataset name>`` (kept, so a resumed run reads the same sessions). For ``dw train``."""
    out: list[str] = []
    for p in paths:
        if dataset_format(p) is None:
            out.append(str(p))
            continue
        dest = Path(work_dir) / Path(p).resolve().name
        if not (dest.is_dir() and any(dest.glob("*/session.json"))):
            if dest.exists():
                shutil.rmtree(dest)
            import_dataset(p, dest)
        out.append(str(dest))
    return out
