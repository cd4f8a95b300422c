"""Streaming on loopback: capture -> encode -> send -> receive -> decode, p50/p95 per stage and end to end.

A :class:`~agent.stream.server.StreamServer` serves a virtual desktop; a :class:`RemoteDesktop` on the
same machine moves the pointer every frame (so every frame carries motion) and decodes the stream.
``capture`` is the virtual desktop's render + copy, ``encode`` the stream encoder, ``send`` the server's
websocket send, ``transfer`` from "payload ready" to "message received" (queueing + socket), ``decode``
the client's decoder; ``end_to_end`` from the start of capture to the decoded picture in the client.
"""

from __future__ import annotations

import random
import time

from agent.stats import percentiles

DEFAULT_SIZES = [(1920, 1080), (5120, 2880)]
STAGES = ("capture", "encode", "send", "transfer", "decode", "end_to_end")


def _measure(width: int, height: int, frames: int, fps: float, fmt: str) -> dict:
    from agent.desktops.remote import RemoteDesktop
    from agent.desktops.virtual import VirtualDesktop
    from agent.stream.server import ServerThread, StreamServer
    from policies.actions import Move

    scale = 2.0 if width >= 5120 else 1.0
    desk = VirtualDesktop("enter-text", seed=0, size=(width, height), scale=scale, fps=fps)
    server = StreamServer(desk, port=0, fps=fps, video=(fmt == "video"))
    with ServerThread(server) as srv:
        remote = RemoteDesktop(srv.url, srv.token, format=fmt, frame_timeout=30.0)
        try:
            rng = random.Random(0)
            remote.observe()  # the first (key)frame
            warm = min(5, frames // 4)
            for _ in range(warm):
                remote.apply(Move(rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)))
                remote.observe()
            for k in ("decode", "latency_us", "transfer_us"):
                remote.timings[k].clear()
            for k in srv.timings:
                srv.timings[k].clear()
            b0, t0 = remote.bytes_received, time.perf_counter()
            for _ in range(frames):
                remote.apply(Move(rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)))
                remote.observe()
            seconds = time.perf_counter() - t0
            nbytes = remote.bytes_received - b0
            st = srv.stats()
            video = srv.encoder.describe() if srv.encoder is not None and fmt == "video" else None
        finally:
            remote.close()
    enc = "encode" if fmt == "video" else "jpeg"
    stages = {
        "capture": percentiles(list(srv.timings["capture"])),
        "encode": percentiles(list(srv.timings[enc])),
        "send": percentiles(list(srv.timings["send"])),
        "transfer": percentiles([u * 1000 for u in remote.timings["transfer_us"]]),
        "decode": percentiles(list(remote.timings["decode"])),
        "end_to_end": percentiles([u * 1000 for u in remote.timings["latency_us"]]),
    }
    return {
        "size": f"{width}x{height}", "scale": scale, "format": fmt, "frames": frames,
        "codec": (video or {}).get("codec") if video else "jpeg",
        "codec_string": (video or {}).get("codec_string"),
        "stages": stages,
        "bytes_per_s": round(nbytes / seconds, 1) if seconds > 0 else 0.0,
        "fps_delivered": round(stages["decode"]["n"] / seconds, 2) if seconds > 0 else 0.0,
        "dropped": st["counters"]["dropped"],
    }


def run(sizes=None, quick: bool = False, formats: tuple[str, ...] = ("video",)) -> dict:
    rows = []
    for w, h in sizes or DEFAULT_SIZES:
        big = w * h > 4096 * 2304
        frames = (15 if big else 40) if quick else (60 if big else 200)
        fps = 15.0 if big else 30.0
        for fmt in formats:
            rows.append(_measure(w, h, frames, fps, fmt))
    return {"rows": rows, "note": "loopback, one client moving the pointer every frame; wall-clock stamps "
                                  "from the frame header (same machine)"}


def table(result: dict):
    from rich.table import Table

    t = Table(title="stream on loopback (ms, p50 / p95)")
    t.add_column("size")
    t.add_column("codec")
    for s in STAGES:
        t.add_column(s, justify="right")
    t.add_column("MB/s", justify="right")
    t.add_column("fps", justify="right")
    for r in result["rows"]:
        cells = [f"{r['stages'][s]['p50_ms']:.2f} / {r['stages'][s]['p95_ms']:.2f}" for s in STAGES]
        t.add_row(r["size"], str(r["codec_string"] or r["codec"]), *cells, f"{r['bytes_per_s'] / 1e6:.2f}",
                  f"{r['fps_delivered']:.1f}")
    return t
