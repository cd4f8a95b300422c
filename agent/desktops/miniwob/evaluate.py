"""MiniWoB++ episodes, demos and the success table (task x policy), with published references.

Seeds: demos use ``DEMO_SEED`` and up, evaluation ``EVAL_SEED`` and up (disjoint). One browser per
task serves all its episodes (starting Chromium costs ~1 s; an episode start ~0.1 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

DEMO_SEED = 0
EVAL_SEED = 100_000
MAX_STEPS = 30
DEMO_FPS = 10.0

# Published pixel-only success rates per task (fractions), where the papers give per-task numbers.
# None: this repository found no per-task number for that task (see docs/miniwob.md).
REFERENCES: dict[str, dict[str, float | None]] = {
    "cc-net-pixels": {},  # Humphreys et al. 2022: ~24% mean over 104 tasks pixels-only; no per-task table found
    "pix2act": {},  # Shaw et al. 2023: ~96% mean over 59 tasks; per-task table not retrieved here
}
REFERENCE_MEANS = {"cc-net-pixels": (0.24, 104), "pix2act": (0.96, 59)}


def parse_tasks(text: str) -> list[str]:
    """``--tasks``: a list name (``all``: the 17 classic tasks the bundled checkpoints learned,
    ``experts``: every task with a scripted expert, ``pix2act59``: Pix2Act's evaluation set) or
    comma-separated task names from the installed package."""
    from agent.desktops.miniwob.browser import task_names
    from agent.desktops.miniwob.experts import EXPERT_TASKS
    from agent.desktops.miniwob.tasklists import TASK_LISTS
    from agent.errors import UserError

    text = text.strip()
    if text in ("", "all"):
        return list(TASK_LISTS["all"])
    if text == "experts":
        return list(EXPERT_TASKS)
    if text in TASK_LISTS:
        return list(TASK_LISTS[text])
    names = set(task_names())
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    for t in tasks:
        if t not in names:
            raise UserError(f"unknown MiniWoB++ task {t!r}; task lists: {', '.join(TASK_LISTS)}; "
                            f"tasks with scripted experts: {', '.join(EXPERT_TASKS)}")
    return tasks


def installed(task: str) -> bool:
    from agent.desktops.miniwob.browser import task_names

    return task in task_names()


def run_task(task: str, seeds: Iterable[int], policy, *, mode: str = "headless", max_steps: int = MAX_STEPS,
             recorder_for: Callable[[object, int], object] | None = None,
             on_result: Callable[[dict], None] | None = None, browser_kw: dict | None = None,
             desktop_kw: dict | None = None) -> list[dict]:
    """Episodes of one task on one browser; one result dict per seed."""
    from agent.desktops.miniwob.desktop import MiniWoBBrowser, open_miniwob
    from agent.loop import Agent

    out = []
    with MiniWoBBrowser(task, mode, **(browser_kw or {})) as browser:
        for seed in seeds:
            desk = open_miniwob(task, seed, mode, browser=browser, **(desktop_kw or {}))
            rec = recorder_for(desk, seed) if recorder_for else None
            t0 = time.perf_counter()
            try:
                res = Agent(desk, policy, recorder=rec, max_steps=max_steps).run()
            finally:
                desk.close()
            infer = res.timings_ns.get("infer") or [0]
            r = {"task": task, "seed": seed, "mode": mode, "policy": getattr(policy, "name", "?"),
                 "success": bool(res.success), "reward": desk.reward, "steps": res.steps, "reason": res.reason,
                 "wall_seconds": round(time.perf_counter() - t0, 3),
                 "infer_ms_mean": round(sum(infer) / len(infer) / 1e6, 3), "errors": res.errors[:3]}
            if rec is not None:
                r["session"] = str(rec.path)
                if res.reason.startswith("recording-error"):  # a full disk: the next episode would fail too
                    from agent.sessions.format import RecordingError

                    raise RecordingError(f"{res.reason.removeprefix('recording-error: ')}; {rec.path} is closed "
                                         "and readable up to the failure")
            out.append(r)
            if on_result:
                on_result(r)
    return out


def evaluate(tasks: list[str], policies: list[str], *, episodes: int = 50, seed: int = EVAL_SEED,
             mode: str = "headless", max_steps: int = MAX_STEPS, device: str = "cpu",
             on_result: Callable[[dict], None] | None = None) -> list[dict]:
    from policies import load_policy

    results = []
    for spec in policies:
        policy = load_policy(spec, seed=seed, device=device)
        policy.name = spec
        for task in tasks:
            if not installed(task):  # a named list may hold a task this package lacks (pix2act59's drag-item)
                continue
            results += run_task(task, range(seed, seed + episodes), policy, mode=mode, max_steps=max_steps,
                                on_result=on_result)
    return results


def record_demos(tasks: list[str], episodes: int, out: str | Path, *, seed: int = DEMO_SEED,
                 mode: str = "headless", max_steps: int = MAX_STEPS, keep_failures: bool = False,
                 on_result: Callable[[dict], None] | None = None, dagger=None, beta: float = 0.0) -> list[dict]:
    """Scripted-expert demos as ordinary sessions: ``out/<task>-<mode>-s<seed>``.

    With ``dagger`` (a loaded policy) that policy drives and the DOM expert labels every state it
    reaches (:class:`agent.sessions.dagger.ExpertLabels`, ``beta`` as there); every episode is kept, the
    failures being the point."""
    import shutil

    from agent.sessions.dagger import ExpertLabels, ExpertTargets
    from agent.sessions.demos import demo_recorder
    from policies.builtin import ScriptedPolicy

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labeller = ScriptedPolicy() if dagger is None else ExpertLabels(dagger, beta)
    driver = ExpertTargets(labeller, None)  # each step also records the word naming the expert's target

    def recorder_for(desk, s):
        path = out / f"{desk.task}-{mode}-s{s}"
        if path.exists():
            shutil.rmtree(path)
        rec = demo_recorder(path, desk, DEMO_FPS, driver.name)
        driver.recorder = rec
        if dagger is not None:
            labeller.start(rec, s)
        return rec

    results = []
    for task in tasks:
        if not installed(task):
            continue
        for r in run_task(task, range(seed, seed + episodes), driver, mode=mode, max_steps=max_steps,
                          recorder_for=recorder_for):
            if not r["success"] and not keep_failures and dagger is None:
                shutil.rmtree(r["session"], ignore_errors=True)
                r["kept"] = False
            results.append(r)
            if on_result:
                on_result(r)
    return results


def summarise(results: list[dict], tasks: list[str] | None = None) -> dict:
    """Success rate per task and policy, the mean over tasks per policy, each task's expert coverage
    (``expert``: the task's name or None, ``reason`` where None, ``available``: installed here), and
    the references. ``tasks`` lists every task asked for, those that could not run included."""
    from agent.desktops.miniwob.tasklists import coverage

    cells: dict[str, dict[str, list[dict]]] = {t: {} for t in tasks or []}
    for r in results:
        cells.setdefault(r["task"], {}).setdefault(r["policy"], []).append(r)
    out = {}
    for task, by_policy in cells.items():
        out[task] = {p: {"episodes": len(rs), "success_rate": sum(r["success"] for r in rs) / len(rs),
                         "mean_steps": sum(r["steps"] for r in rs) / len(rs),
                         "mean_wall_seconds": sum(r["wall_seconds"] for r in rs) / len(rs)}
                     for p, rs in by_policy.items()}
        out[task].update(coverage(task), available=installed(task) if tasks else True)
        out[task]["references"] = {k: v.get(task) for k, v in REFERENCES.items()}
    policies = sorted({r["policy"] for r in results})
    means = {p: sum(out[t][p]["success_rate"] for t in out if p in out[t])
             / max(1, sum(1 for t in out if p in out[t])) for p in policies}
    return {"tasks": out, "policies": policies, "mean": means, "episodes": len(results),
            "covered": sum(1 for t in out.values() if t["expert"]), "without_expert":
                {k: v["reason"] for k, v in out.items() if not v["expert"]},
            "reference_means": {k: {"success": v[0], "tasks": v[1]} for k, v in REFERENCE_MEANS.items()}}


def _ref(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0%}"


def table(summary: dict, title: str = "MiniWoB++ success"):
    from rich.table import Table

    pols = summary["policies"]
    t = Table(title=title)
    t.add_column("task")
    for p in pols:
        t.add_column(p, justify="right")
    for k in REFERENCES:
        t.add_column(f"{k} (paper)", justify="right")
    for task, row in summary["tasks"].items():
        cells = [f"{row[p]['success_rate']:.0%} ({row[p]['episodes']} ep, {row[p]['mean_steps']:.1f} st)"
                 if p in row else ("not installed" if not row.get("available", True) else "-") for p in pols]
        t.add_row(task, *cells, *[_ref(row["references"].get(k)) for k in REFERENCES])
    refs = [f"~{v['success']:.0%} over {v['tasks']} tasks" for v in summary["reference_means"].values()]
    t.add_row("[b]mean over these tasks[/b]", *[f"[b]{summary['mean'][p]:.0%}[/b]" for p in pols], *refs)
    return t
