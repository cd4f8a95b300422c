"""``dw bench scaleout``: throughput of evaluation and replay with 1 and 2 workers, per backend.

Closed-loop episodes (the random policy, so every episode runs its full step budget) and
open-loop replays of freshly recorded scripted sessions run on the local process pool and, when
Ray is installed, on a local Ray. Rates count the task phase only (workers up, policy loaded);
start-up is reported beside them. Every configuration must give the same results: the
benchmark checks it (``identical``).
"""

from __future__ import annotations

import tempfile
import time

EVAL_SIZE = (1280, 720, 1.0)
REPLAY_SIZE = (1280, 720, 1.0)
BENCH_SEED = 50_000


def _record_sessions(out: str, tasks: list[str], per_task: int) -> list[str]:
    from agent.desktops.virtual.evaluate import episode_specs
    from agent.sessions.demos import record_demo
    from agent.sessions.format import find_sessions

    for spec in episode_specs(tasks, per_task, [REPLAY_SIZE], seed=BENCH_SEED):
        record_demo({**spec, "fps": 10.0}, out)
    return find_sessions([out])


def run(quick: bool = False, workers: tuple[int, ...] = (1, 2), backends: tuple[str, ...] | None = None) -> dict:
    from agent.desktops.virtual import task_names
    from agent.desktops.virtual.evaluate import episode_specs
    from agent.scaleout.backends import deterministic_view, evaluate_episodes, replay_sessions

    tasks = task_names()
    episodes = 2 if quick else 6
    specs = episode_specs(tasks, episodes, [EVAL_SIZE], seed=BENCH_SEED)
    max_steps = 30
    if backends is None:
        try:
            import ray  # noqa: F401

            backends = ("local", "ray")
        except ImportError:
            backends = ("local",)
    result: dict = {
        "workload": {
            "eval": {"policy": "random", "episodes": len(specs), "size": "x".join(map(str, EVAL_SIZE[:2])),
                     "max_steps": max_steps},
        },
        "rows": [],
        "skipped": [] if "ray" in backends else ["ray: not installed (pip install 'digital-worker[ray]')"],
    }
    started_ray = False
    with tempfile.TemporaryDirectory(prefix="dw-bench-scaleout-") as tmp:
        t0 = time.perf_counter()
        paths = _record_sessions(tmp, tasks, 1 if quick else 3)
        result["workload"]["replay"] = {"policy": "scripted", "sessions": len(paths),
                                        "size": "x".join(map(str, REPLAY_SIZE[:2])),
                                        "recording_seconds": round(time.perf_counter() - t0, 2)}
        views: dict[str, list] = {"eval": [], "replay": []}
        try:
            for backend in backends:
                if backend == "ray":
                    import ray

                    if not ray.is_initialized():
                        ray.init(num_cpus=max(workers), include_dashboard=False, log_to_driver=False,
                                 logging_level="WARNING")
                        started_ray = True
                for n in workers:
                    ev = evaluate_episodes(specs, "random", max_steps=max_steps, backend=backend, workers=n)
                    rp = replay_sessions(paths, "scripted", backend=backend, workers=n)
                    views["eval"].append(deterministic_view(ev.results))
                    views["replay"].append(deterministic_view(rp.results))
                    for kind, rep in (("eval", ev), ("replay", rp)):
                        tp = rep.throughput
                        unit = "episodes" if kind == "eval" else "sessions"
                        result["rows"].append({
                            "kind": kind, "backend": backend, "workers": tp["workers"],
                            "tasks_per_s": tp[f"{unit}_per_s"], "frames_per_s": tp["frames_per_s"],
                            "startup_seconds": tp["startup_seconds"], "wall_seconds": tp["wall_seconds"],
                            "failed": tp["failed"],
                        })
        finally:
            if started_ray:
                import ray

                ray.shutdown()
    for row in result["rows"]:
        base = next(r for r in result["rows"] if r["kind"] == row["kind"] and r["backend"] == row["backend"])
        row["speedup"] = round(row["tasks_per_s"] / base["tasks_per_s"], 2) if base["tasks_per_s"] else None
    result["identical"] = all(all(v == vs[0] for v in vs) for vs in views.values())
    return result


def table(result: dict):
    from rich.table import Table

    ev, rp = result["workload"]["eval"], result["workload"].get("replay", {})
    t = Table(title=f"scale-out throughput: {ev['episodes']} episodes ({ev['policy']}, {ev['size']}), "
                    f"{rp.get('sessions', 0)} replays ({rp.get('policy', '-')}, {rp.get('size', '-')}); "
                    f"results identical across backends: {'yes' if result.get('identical') else 'NO'}")
    for col in ("kind", "backend", "workers", "tasks/s", "frames/s", "speed-up", "start-up s", "wall s", "failed"):
        t.add_column(col, justify="left" if col in ("kind", "backend") else "right")
    for r in result["rows"]:
        t.add_row(r["kind"], r["backend"], str(r["workers"]), f"{r['tasks_per_s']:.2f}", f"{r['frames_per_s']:.0f}",
                  "-" if r.get("speedup") is None else f"{r['speedup']:.2f}x", f"{r['startup_seconds']:.2f}",
                  f"{r['wall_seconds']:.2f}", str(r["failed"]))
    for s in result.get("skipped", []):
        t.add_row("-", s, *[""] * 7)
    return t
