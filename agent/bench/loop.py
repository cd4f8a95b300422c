"""The agent loop on the virtual desktop: per-stage latency (capture, encode, infer, act) per policy and size."""

from __future__ import annotations

from agent.loop import STAGES, Agent, percentiles

DEFAULT_SIZES = [(1920, 1080, 1.0), (5120, 2880, 2.0)]


def run(sizes=None, policies=None, quick: bool = False) -> dict:
    import tempfile

    from agent.session import SessionRecorder
    from agent.virtual import VirtualDesktop
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


def table(result: dict):
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
