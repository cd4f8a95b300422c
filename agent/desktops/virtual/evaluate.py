"""Closed-loop evaluation on the virtual desktop: success rate per task and screen size.

Episodes use seeds disjoint from the demos (:data:`EVAL_SEED` and up). Everything an episode
does follows from its spec and the policy, so the same seed gives the same metrics.
``run_episodes`` is the one loop over episodes (a Ray or process-pool backend can replace it).

What a policy does once the task is done matters as much (a worker that clicks on damages a
real desktop). A spec's ``after_success`` (seconds; ``dw eval`` gives :data:`AFTER_SUCCESS_S`)
keeps an episode going that long after its first success, the desktop still rendering and
reacting (its tail is stretched to the window), and counts the policy's actions other than
``wait`` and ``done`` there (``actions_after_success``); ``done`` ends it early, ``0`` ends the
episode at the success. Success is the first success, as without the window. Without the key
the episode ends as the desktop's own tail and ``done`` decide (:data:`~agent.desktops.virtual.base.TAIL_S`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

EVAL_SEED = 10_000
DEFAULT_SIZES = ((640, 480, 1.0), (1920, 1080, 1.0), (5120, 2880, 2.0))
MAX_STEPS = 100
AFTER_SUCCESS_S = 5.0  # dw eval's look at what the policy does after a success (--after-success)


def episode_specs(tasks: Iterable[str], episodes: int, sizes: Iterable[tuple[int, int, float]],
                  seed: int = EVAL_SEED, theme: str | None = None, font: str | None = None,
                  after_success: float | None = None) -> list[dict]:
    """One spec per (task, size, episode): the same seeds for every size. ``theme``/``font``: a
    name, "mixed" (per episode from task and seed) or None (the classic look). ``after_success``:
    the window after a success (see the module docstring; None: none)."""
    extra = {k: v for k, v in (("theme", theme), ("font", font)) if v is not None}
    if after_success is not None:
        extra["after_success"] = float(after_success)
    return [
        {"task": t, "seed": seed + e, "size": [w, h], "scale": s, **extra}
        for t in tasks for (w, h, s) in sizes for e in range(episodes)
    ]


def run_episode(spec: dict, policy, *, max_steps: int = MAX_STEPS) -> dict:
    """One episode; ``steps`` counts the steps up to the first success (all of them without
    one), ``steps_after_success`` and ``actions_after_success`` the window's (None without one)."""
    from agent.desktops.virtual import VirtualDesktop
    from agent.desktops.virtual.base import TAIL_S
    from agent.loop import Agent

    w, h = spec["size"]
    after = spec.get("after_success")
    after = None if after is None else float(after)
    desk = VirtualDesktop(spec["task"], seed=spec["seed"], size=(w, h), scale=spec["scale"],
                          fps=spec.get("fps", 10.0), human_like=spec.get("human_like", False),
                          theme=spec.get("theme"), font=spec.get("font"),
                          tail=TAIL_S if after is None else max(TAIL_S, after))  # reacting through the window
    t0 = time.perf_counter()
    res = Agent(desk, policy, max_steps=max_steps, after_success=after).run()
    wall = time.perf_counter() - t0
    infer = res.timings_ns.get("infer") or [0]
    at = res.success_step
    out = {
        **{k: spec[k] for k in ("task", "seed", "size", "scale")},
        **desk.look.info(),
        "success": bool(res.success),
        "steps": res.steps if at is None else at,
        "steps_after_success": None if at is None or not after else res.steps - at,
        "actions_after_success": None if at is None or not after else res.actions_after_success,
        "virtual_seconds": round(res.duration, 3),
        "reason": getattr(desk, "reason", None) or res.reason,
        "wall_seconds": round(wall, 3),
        "infer_ms_mean": round(sum(infer) / len(infer) / 1e6, 3),
        "errors": len(res.errors),
    }
    desk.close()
    return out


def run_episodes(specs: list[dict], policy_spec: str, *, device: str = "cpu", seed: int = 0,
                 max_steps: int = MAX_STEPS, on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Run every episode of ``specs`` with the policy ``policy_spec``; one dict per episode, in order."""
    from policies import load_policy

    policy = load_policy(policy_spec, seed=seed, device=device)
    results = []
    for spec in specs:
        r = run_episode(spec, policy, max_steps=max_steps)
        results.append(r)
        if on_result:
            on_result(r)
    return results


def size_label(size, scale) -> str:
    return f"{size[0]}x{size[1]}@{scale:g}"


def after_success_mean(results: list[dict]) -> float | None:
    """The mean of ``actions_after_success`` over the episodes that have one (a success with a
    window); None where none has."""
    vals = [r["actions_after_success"] for r in results if r.get("actions_after_success") is not None]
    return round(sum(vals) / len(vals), 3) if vals else None


def summarise(results: list[dict]) -> dict:
    """Success rate per task and size, per size (mean over tasks), per theme, and overall; the
    mean actions after success per cell and overall (None where no episode measured it)."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        cells.setdefault((r["task"], size_label(r["size"], r["scale"])), []).append(r)
    per_cell = {}
    for (task, size), rs in cells.items():
        per_cell.setdefault(task, {})[size] = {
            "episodes": len(rs),
            "success_rate": sum(r["success"] for r in rs) / len(rs),
            "mean_steps": sum(r["steps"] for r in rs) / len(rs),
            "mean_wall_seconds": sum(r["wall_seconds"] for r in rs) / len(rs),
            "mean_actions_after_success": after_success_mean(rs),
        }
    sizes = sorted({s for t in per_cell.values() for s in t}, key=lambda s: int(s.split("x")[0]))
    per_size = {}
    for s in sizes:
        rates = [per_cell[t][s]["success_rate"] for t in per_cell if s in per_cell[t]]
        per_size[s] = sum(rates) / len(rates)
    overall = sum(r["success"] for r in results) / len(results) if results else 0.0
    themes: dict[str, list[bool]] = {}
    for r in results:
        themes.setdefault(r.get("theme", "classic"), []).append(bool(r["success"]))
    per_theme = {t: {"episodes": len(v), "success_rate": sum(v) / len(v)} for t, v in sorted(themes.items())}
    measured = [r for r in results if r.get("actions_after_success") is not None]
    return {"tasks": per_cell, "sizes": per_size, "themes": per_theme, "overall": overall,
            "episodes": len(results), "mean_actions_after_success": after_success_mean(results),
            "after_success_episodes": len(measured),
            "episodes_acting_after_success": sum(1 for r in measured if r["actions_after_success"] > 0)}


def after_success_line(summary: dict, window: float | None) -> str:
    """The text report's line on actions after success."""
    if not window:
        return "actions after success: not measured (--after-success 0)"
    n = summary.get("after_success_episodes", 0)
    if not n:
        return f"actions after success: no successful episode to measure ({window:g} s window)"
    return (f"actions after success: mean {summary['mean_actions_after_success']:.2f} per successful episode "
            f"({window:g} s window; {summary['episodes_acting_after_success']} of {n} acted)")


def table(summary: dict, title: str = "closed-loop success"):
    from rich.table import Table

    sizes = list(summary["sizes"])
    t = Table(title=title)
    t.add_column("task")
    for s in sizes:
        t.add_column(s, justify="right")
    for task, row in summary["tasks"].items():
        t.add_row(task, *[
            f"{row[s]['success_rate']:.0%} ({row[s]['mean_steps']:.1f} st, {row[s]['mean_wall_seconds']:.2f}s)"
            if s in row else "-" for s in sizes
        ])
    t.add_row("[b]mean over tasks[/b]", *[f"[b]{summary['sizes'][s]:.0%}[/b]" for s in sizes])
    return t
