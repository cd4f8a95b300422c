"""``dw bench encoders``: convert / encode / decode timings, bytes and PSNR per size and rung, on
desktop-like content with motion (a moving window, scrolling text); and a pipelined capture-like
throughput figure for ``stream`` with conversion and encoding overlapped on threads."""

from __future__ import annotations

import os
import queue
import statistics
import threading
import time

import av
import numpy as np

from agent.stats import quantile

DEFAULT_SIZES = [(1920, 1080), (3840, 2160), (5120, 2880)]
PIPELINE_SIZES = [(1920, 1080), (5120, 2880)]
BENCH_RUNGS = ("libx264", "libvpx-vp9", "libsvtav1", "mjpeg")


def _pct(xs: list[float], q: float) -> float:
    return round(quantile(xs, q), 2)


def _rung_bench(rung, w: int, h: int, frames: list[np.ndarray], purpose: str = "stream") -> dict:
    from encoders.ladder import EncoderError, Session, bgra_to_frame, frame_to_bgra, make_decoder, psnr

    spec = rung.spec(w, h, 30, purpose)
    why = rung.check_limits(spec)
    if why:
        return {"rung": rung.name, "ok": False, "reason": why}
    try:
        sess = Session(rung, spec)
    except EncoderError as e:
        return {"rung": rung.name, "ok": False, "reason": str(e)}
    dec = make_decoder(rung.decoder)
    conv, enc, decd, sizes, quality = [], [], [], [], []
    for i, img in enumerate(frames):
        t0 = time.perf_counter()
        frame = bgra_to_frame(img, spec, rung.pix_fmt)
        t1 = time.perf_counter()
        frame.pts, frame.time_base = i * 33, sess.ctx.time_base
        if i == 0:
            frame.pict_type = av.video.frame.PictureType.I
        packets = list(sess._encode(frame))
        t2 = time.perf_counter()
        out = []
        for p in packets:
            out += dec.decode(av.Packet(bytes(p)))
        t3 = time.perf_counter()
        conv.append((t1 - t0) * 1000)
        enc.append((t2 - t1) * 1000)
        decd.append((t3 - t2) * 1000)
        sizes.append(sum(p.size for p in packets))
        if out and i % 3 == 0:
            got = frame_to_bgra(out[-1])[:h, :w]
            quality.append(psnr(img, got)[0])
    try:
        sess.encode(None)  # drain (SVT-AV1 complains when closed without end of stream)
    except EncoderError:
        pass
    return {"rung": rung.name, "ok": True, "frames": len(frames),
            "convert_ms": {"p50": _pct(conv, .5), "p95": _pct(conv, .95)},
            "encode_ms": {"p50": _pct(enc, .5), "p95": _pct(enc, .95)},
            "decode_ms": {"p50": _pct(decd, .5), "p95": _pct(decd, .95)},
            "bytes_per_frame": int(statistics.mean(sizes)), "keyframe_bytes": sizes[0],
            "psnr_vs_source": round(min(quality), 2) if quality else None}


def pipeline(w: int, h: int, n: int = 60) -> dict:
    """Capture-like throughput: pictures arrive as fast as the pipeline takes them; conversion runs on
    one thread and encoding on another, joined by a bounded queue (depth 2)."""
    from encoders.ladder import Session, bgra_to_frame, choose
    from encoders.picture import desktop_frame

    rung, spec, decision, _ = choose(w, h, 30, "stream")
    sess = Session(rung, spec)
    pics = [desktop_frame(w, h, i) for i in range(8)]
    q: queue.Queue = queue.Queue(maxsize=2)
    sent = [0]

    def convert() -> None:
        for i in range(n):
            f = bgra_to_frame(pics[i % len(pics)], spec, rung.pix_fmt)
            f.pts, f.time_base = i * 10, sess.ctx.time_base
            q.put(f)
        q.put(None)

    t0 = time.perf_counter()
    th = threading.Thread(target=convert)
    th.start()
    while (f := q.get()) is not None:
        sent[0] += sum(p.size for p in sess._encode(f))
    th.join()
    dt = time.perf_counter() - t0
    sess.encode(None)
    return {"size": f"{w}x{h}", "rung": rung.name, "frames": n, "fps": round(n / dt, 1),
            "ms_per_frame": round(dt * 1000 / n, 2), "mbit_per_s_at_30fps": round(sent[0] * 8 * 30 / n / 1e6, 1),
            "cores": os.cpu_count()}


def run(sizes: list[tuple[int, int]] | None = None, quick: bool = False) -> dict:
    from encoders.ladder import default_ladder
    from encoders.picture import desktop_frame

    sizes = sizes or DEFAULT_SIZES
    n = 4 if quick else 12
    rungs = [r for r in default_ladder() if r.name in BENCH_RUNGS]
    result: dict = {"sizes": [], "pipeline": [], "quick": quick, "pyav": av.__version__}
    for w, h in sizes:
        frames = [desktop_frame(w, h, i) for i in range(n)]
        entry = {"size": f"{w}x{h}", "rungs": []}
        for r in rungs:
            entry["rungs"].append(_rung_bench(r, w, h, frames[: max(3, n // 3)] if r.name != "libx264" else frames))
        result["sizes"].append(entry)
    for w, h in PIPELINE_SIZES:
        result["pipeline"].append(pipeline(w, h, 20 if quick else 60))
    return result


def table(result: dict):
    from rich.table import Table

    t = Table(title="Encoders: per frame, desktop content with motion (stream settings)")
    for c in ("size", "rung", "convert p50/p95 ms", "encode p50/p95 ms", "decode p50/p95 ms", "bytes/frame",
              "PSNR dB"):
        t.add_column(c)
    for s in result["sizes"]:
        for r in s["rungs"]:
            if not r["ok"]:
                t.add_row(s["size"], r["rung"], "-", "-", "-", "-", r["reason"][:40])
                continue
            t.add_row(s["size"], r["rung"], *(f"{r[k]['p50']}/{r[k]['p95']}" for k in
                                              ("convert_ms", "encode_ms", "decode_ms")),
                      f"{r['bytes_per_frame']:,}", str(r["psnr_vs_source"]))
    for p in result["pipeline"]:
        t.add_row(p["size"], f"{p['rung']} pipelined", "", f"{p['ms_per_frame']} ms/frame", "", "",
                  f"{p['fps']} fps")
    return t
