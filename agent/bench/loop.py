"""``dw bench loop``: the agent loop's latency, two ways.

- **live** (first table): end-to-end action latency on a real X server for each model size at
  1920x1080 and 5120x2880 — from a change appearing on screen to the agent's click reaching the
  target app (same CLOCK_MONOTONIC) — with LiveDesktop (mss) + the model + the Executor
  (pyautogui). See :mod:`agent.bench.live` for the harness and what the "policy" is.
- **virtual** (second table): per-stage latency on the in-process virtual desktop, recording on.
"""

from __future__ import annotations

from agent.loop import STAGES, Agent
from agent.stats import percentiles

DEFAULT_SIZES = [(1920, 1080, 1.0), (5120, 2880, 2.0)]
ScaledSizes = list[tuple[int, int, float | None]]  # (width, height, scale or None)
LIVE_POLICIES = ["pixel-tiny", "pixel-small", "pixel-base", "pixel-large"]


def run_live(sizes: ScaledSizes | None = None, policies=None, device: str = "cpu", quick: bool = False) -> dict:
    from agent.bench.live import run_child

    names = [p for p in (policies or LIVE_POLICIES)]
    rows, errors = [], []
    for w, h, scale in sizes or DEFAULT_SIZES:
        scale = scale or (2.0 if w >= 5120 else 1.0)
        trials = 5 if quick else (16 if w * h <= 1920 * 1080 else 10)
        res = run_child({"size": [w, h], "scale": scale, "runs": [["ours", n] for n in names],
                         "trials": trials, "device": device, "timeout": 15.0})
        if "error" in res:
            errors.append(f"{w}x{h}: {res['error']}")
        rows.extend(res.get("rows", []))
    return {"rows": rows, "errors": errors}


def run(sizes: ScaledSizes | None = None, policies=None, device: str = "cpu", quick: bool = False) -> dict:
    live = run_live(sizes, [p for p in policies or [] if p.startswith("pixel") or "/" in p] or None, device, quick)
    virtual = run_virtual(sizes, policies, quick)
    return {"live": live, **virtual}


def run_virtual(sizes: ScaledSizes | None = None, policies=None, quick: bool = False) -> dict:
    import tempfile

    from agent.desktops.virtual import VirtualDesktop
    from agent.sessions.format import SessionRecorder
    from policies import load_policy
    from policies.registry import best_bundled_policy

    policies = policies or sorted({"scripted", best_bundled_policy()})
    steps = 10 if quick else 40
    rows = []
    for w, h, scale in sizes or DEFAULT_SIZES:
        scale = scale or (2.0 if w >= 5120 else 1.0)
        for name in policies:
            policy = load_policy(name)
            timings: dict[str, list[int]] = {s: [] for s in STAGES}
            seed = 0
            with tempfile.TemporaryDirectory() as tmp:
                while len(timings["capture"]) < steps:
                    desk = VirtualDesktop("click-button", seed=seed, size=(w, h), scale=scale)
                    rec = SessionRecorder(f"{tmp}/{seed}", desk.screen, 10.0, desktop=desk.info())
                    res = Agent(desk, policy, recorder=rec, max_steps=steps).run()
                    for s in STAGES:
                        timings[s].extend(res.timings_ns[s])
                    seed += 1
            total = [sum(v) for v in zip(*(timings[s] for s in STAGES), strict=True)]
            rows.append({"size": f"{w}x{h}", "scale": scale, "policy": name,
                         "stages": {s: percentiles(timings[s]) for s in STAGES}, "step": percentiles(total)})
    return {"rows": rows, "note": "virtual desktop, recording on; capture = render + copy of the frame"}


def live_table(result: dict):
    from rich.table import Table

    t = Table(title="live loop on Xvfb: change on screen -> click delivered (ms, p50 / p95)")
    for c in ("size", "policy", "end-to-end", "capture", "infer", "act", "step", "trials"):
        t.add_column(c, justify="left" if c in ("size", "policy") else "right")
    for r in result.get("rows", []):
        st = r["stages"]
        t.add_row(r["size"], r["policy"], f"{r['end_to_end']['p50_ms']:.1f} / {r['end_to_end']['p95_ms']:.1f}",
                  *[f"{st[s]['p50_ms']:.2f} / {st[s]['p95_ms']:.2f}" for s in ("capture", "infer", "act")],
                  f"{r['step']['p50_ms']:.2f} / {r['step']['p95_ms']:.2f}",
                  f"{r['end_to_end']['n']}" + (f" ({r['missed']} missed)" if r["missed"] else ""))
    for e in result.get("errors", []):
        t.add_row("[red]error", e)
    return t


def table(result: dict):
    from rich.console import Group

    return Group(live_table(result.get("live", {})), virtual_table(result))


def virtual_table(result: dict):
    from rich.table import Table

    t = Table(title="agent loop on the virtual desktop (ms, p50 / p95)")
    t.add_column("size")
    t.add_column("policy")
    for s in STAGES + ("step",):
        t.add_column(s, justify="right")
    for r in result["rows"]:
        cells = [f"{r['stages'][s]['p50_ms']:.2f} / {r['stages'][s]['p95_ms']:.2f}" for s in STAGES]
        cells.append(f"{r['step']['p50_ms']:.2f} / {r['step']['p95_ms']:.2f}")
        t.add_row(r["size"], r["policy"], *cells)
    return t
