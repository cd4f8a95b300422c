"""``dw bench baseline``: the screenshot-per-step pipeline peer runtimes use, against ours, in one run.

Per size (default 1920x1080 and 5120x2880, each on its own Xvfb showing a realistic desktop),
the same target app, the same policy (``pixel-small`` by default: the real model runs on every
frame, see :mod:`agent.bench.live`) and the same Executor, back to back:

- **ours**: LiveDesktop — mss (XShm) grab of BGRA, no copy or conversion — then the policy;
- **baseline**: ``PIL.ImageGrab.grab()`` (XCB GetImage) -> PNG encode (Pillow defaults) ->
  base64 -> base64 decode -> PNG decode -> BGRA -> the policy; no settle sleeps.

Reported: the end-to-end latency of both (change on screen -> click delivered), each stage's
p50/p95, and ``ratio`` = baseline p50 / ours p50 (also for p95).
"""

from __future__ import annotations

from agent.bench.loop import DEFAULT_SIZES, ScaledSizes

DEFAULT_POLICY = "pixel-small"


def run(sizes: ScaledSizes | None = None, policies=None, device: str = "cpu", quick: bool = False) -> dict:
    from agent.bench.live import run_child

    name = (policies or [DEFAULT_POLICY])[0]
    rows, errors = [], []
    for w, h, scale in sizes or DEFAULT_SIZES:
        scale = scale or (2.0 if w >= 5120 else 1.0)
        big = w * h > 1920 * 1080
        trials = 4 if quick else (10 if big else 16)
        res = run_child({"size": [w, h], "scale": scale, "runs": [["ours", name], ["baseline", name]],
                         "trials": trials, "device": device, "timeout": 20.0})
        if "error" in res:
            errors.append(f"{w}x{h}: {res['error']}")
            continue
        by = {r["pipeline"]: r for r in res["rows"]}
        ours, base = by["ours"], by["baseline"]
        ratio = {q: round(base["end_to_end"][q] / ours["end_to_end"][q], 2) if ours["end_to_end"][q] else None
                 for q in ("p50_ms", "p95_ms")}
        rows.append({"size": f"{w}x{h}", "scale": scale, "policy": name, "ours": ours, "baseline": base,
                     "ratio": ratio, "png_bytes_p50": base.get("png_bytes_p50", 0)})
    return {"rows": rows, "errors": errors,
            "note": "same run, same machine, same X server, same target app, policy and executor"}


def table(result: dict):
    from rich.table import Table

    t = Table(title="screenshot-per-step baseline vs ours, change on screen -> click delivered (ms, p50 / p95)")
    for c in ("size", "pipeline", "end-to-end", "grab", "png_encode", "base64", "decode", "infer", "act",
              "ratio", "png"):
        t.add_column(c, justify="left" if c in ("size", "pipeline") else "right")

    def cell(st: dict, k: str) -> str:
        return f"{st[k]['p50_ms']:.2f} / {st[k]['p95_ms']:.2f}" if k in st else "-"

    for r in result["rows"]:
        for kind in ("ours", "baseline"):
            p = r[kind]
            st = dict(p["stages"])
            if kind == "ours":
                st["grab"] = st["capture"]
            e = p["end_to_end"]
            ratio = f"{r['ratio']['p50_ms']}x / {r['ratio']['p95_ms']}x" if kind == "baseline" else ""
            png = f"{r['png_bytes_p50'] / 1e6:.2f} MB" if kind == "baseline" else ""
            t.add_row(r["size"], kind, f"{e['p50_ms']:.1f} / {e['p95_ms']:.1f}",
                      *[cell(st, k) for k in ("grab", "png_encode", "base64", "decode", "infer", "act")], ratio, png)
    for e in result.get("errors", []):
        t.add_row("[red]error", e)
    return t
