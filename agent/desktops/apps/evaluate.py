"""The apps suite's episodes, success table and demos: ``dw eval --suite apps``, ``dw demos --suite apps``.

One :class:`~agent.desktops.apps.desktop.AppWorld` (Xvfb, and a session bus when a task needs
AT-SPI) serves the whole run; each episode starts its app afresh. Seeds: demos ``DEMO_SEED`` and
up, evaluation ``EVAL_SEED`` and up (disjoint).

Evaluation looks at what the policy does after the task is done, as the virtual suite does
(:mod:`agent.desktops.virtual.evaluate`): an episode goes on for ``after_success`` wall seconds
after its first success (the app still on screen; once the desktop's own tail is over it ignores
input, so what is counted is what the policy tried), counting the policy's actions other than
``wait`` and ``done`` (``actions_after_success``); ``done`` ends it early, ``0`` at the success.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from agent.desktops.apps.tasks import TASKS, TOOLKITS

DEMO_SEED = 0
EVAL_SEED = 200_000
MAX_STEPS = 30
DEMO_FPS = 10.0
AFTER_SUCCESS_S = 5.0  # as agent.desktops.virtual.evaluate.AFTER_SUCCESS_S (dw eval --after-success)


def parse_tasks(text: str) -> list[str]:
    """``all``, a toolkit (``tk``, ``gtk``) or a comma list of task names; unknown: one clear line."""
    from agent.errors import UserError

    text = (text or "all").strip()
    if text == "all":
        return list(TASKS)
    out: list[str] = []
    for name in (t.strip() for t in text.split(",") if t.strip()):
        if name in TOOLKITS:
            out += [t for t, task in TASKS.items() if task.toolkit == name and t not in out]
        elif name in TASKS:
            if name not in out:
                out.append(name)
        else:
            raise UserError(f"unknown apps task {name!r}; tasks: {', '.join(TASKS)} (or all, tk, gtk)")
    if not out:
        raise UserError("no apps tasks given")
    return out


def check_tasks(tasks: list[str]) -> None:
    """Every task's app can run here, else one clear line naming the Debian package."""
    from agent.desktops.apps.desktop import AppUnavailable, check_task_available
    from agent.errors import UserError

    for t in tasks:
        try:
            check_task_available(TASKS[t])
        except AppUnavailable as e:
            raise UserError(f"{t}: {e}") from None


def run_episodes(tasks: list[str], seeds: Iterable[int], policy, *, world=None, max_steps: int = MAX_STEPS,
                 recorder_for: Callable[[object, int], object] | None = None,
                 on_result: Callable[[dict], None] | None = None, after_success: float | None = None) -> list[dict]:
    """Every task x seed on one world (started here unless given); one result dict per episode.
    ``after_success``: the window after a success (module docstring; None: none, as for demos).
    ``steps`` counts the steps up to the first success (all of them without one)."""
    from agent.desktops.apps.desktop import AppDesktop, AppWorld
    from agent.loop import Agent

    seeds = list(seeds)
    own = world is None
    world = world or AppWorld()
    out = []
    try:
        for task in tasks:
            for seed in seeds:
                t0 = time.perf_counter()
                desk = AppDesktop(task, seed, world)
                rec = recorder_for(desk, seed) if recorder_for else None
                try:
                    res = Agent(desk, policy, recorder=rec, max_steps=max_steps, after_success=after_success).run()
                finally:
                    desk.close()
                infer = res.timings_ns.get("infer") or [0]
                at = res.success_step
                r = {"task": task, "toolkit": desk.task.toolkit, "app": desk.task.app, "seed": seed, "look": desk.look,
                     "policy": getattr(policy, "name", "?"), "instruction": desk.instruction,
                     "success": bool(res.success), "steps": res.steps if at is None else at, "reason": res.reason,
                     "steps_after_success": None if at is None or not after_success else res.steps - at,
                     "actions_after_success": None if at is None or not after_success else res.actions_after_success,
                     "wall_seconds": round(time.perf_counter() - t0, 3),
                     "infer_ms_mean": round(sum(infer) / len(infer) / 1e6, 3), "errors": res.errors[:3]}
                if rec is not None:
                    r["session"] = str(rec.path)
                out.append(r)
                if on_result:
                    on_result(r)
    finally:
        if own:
            world.close()
    return out


def evaluate(tasks: list[str], policy_name: str, *, episodes: int = 5, seed: int = EVAL_SEED,
             max_steps: int = MAX_STEPS, device: str = "cpu", on_result=None,
             after_success: float = AFTER_SUCCESS_S) -> list[dict]:
    from policies import load_policy

    policy = load_policy(policy_name, seed=seed, device=device)
    policy.name = policy_name
    return run_episodes(tasks, range(seed, seed + episodes), policy, max_steps=max_steps, on_result=on_result,
                        after_success=after_success)


def record_demos(tasks: list[str], episodes: int, out: str | Path, *, seed: int = DEMO_SEED,
                 max_steps: int = MAX_STEPS, keep_failures: bool = False, on_result=None,
                 policy=None, beta: float = 0.0) -> list[dict]:
    """Scripted-expert demos as ordinary sessions, ``out/<task>-s<seed>``, through the normal recorder.
    With ``policy`` (a loaded policy: ``dw demos --dagger``) it drives and the expert labels every
    state it reaches (:class:`~agent.sessions.dagger.ExpertLabels`, ``beta``: the expert's share of
    steps); every episode is kept, failures too: they are what DAgger learns from."""
    from agent.sessions.dagger import ExpertLabels, ExpertTargets
    from agent.sessions.demos import demo_recorder
    from policies.builtin import ScriptedPolicy

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = ExpertLabels(policy, beta) if policy is not None else None
    driver = ExpertTargets(labels or ScriptedPolicy(), None)  # each step also records the word naming the target

    def recorder_for(desk, s):
        path = out / f"{desk.task.name}-s{s}"
        if path.exists():
            shutil.rmtree(path)
        rec = demo_recorder(path, desk, DEMO_FPS, driver.name)
        driver.recorder = rec
        if labels is not None:
            labels.start(rec, s)
        return rec

    results = []
    for r in run_episodes(tasks, range(seed, seed + episodes), driver, max_steps=max_steps,
                          recorder_for=recorder_for):
        if not r["success"] and not keep_failures and labels is None:
            shutil.rmtree(r["session"], ignore_errors=True)
            r["kept"] = False
        results.append(r)
        if on_result:
            on_result(r)
    return results


def summarise(results: list[dict]) -> dict:
    """Success per task (with its toolkit and app), per toolkit, per look (theme/palette), and overall;
    the mean actions after success per task and overall (None where no episode measured it)."""
    from agent.desktops.virtual.evaluate import after_success_mean

    tasks: dict[str, dict] = {}
    for r in results:
        c = tasks.setdefault(r["task"], {"toolkit": r["toolkit"], "app": r["app"], "episodes": 0, "successes": 0,
                                         "steps": 0, "wall_seconds": 0.0})
        c["episodes"] += 1
        c["successes"] += int(r["success"])
        c["steps"] += r["steps"]
        c["wall_seconds"] += r["wall_seconds"]
    for name, c in tasks.items():
        n = c["episodes"]
        c["success_rate"] = c["successes"] / n
        c["mean_steps"] = round(c.pop("steps") / n, 2)
        c["mean_wall_seconds"] = round(c.pop("wall_seconds") / n, 3)
        c["mean_actions_after_success"] = after_success_mean([r for r in results if r["task"] == name])
    toolkits = {}
    for tk in sorted({c["toolkit"] for c in tasks.values()}):
        rs = [r for r in results if r["toolkit"] == tk]
        toolkits[tk] = {"tasks": sum(1 for c in tasks.values() if c["toolkit"] == tk), "episodes": len(rs),
                        "success_rate": sum(r["success"] for r in rs) / len(rs)}
    looks = {}
    for look in sorted({r.get("look", "") for r in results}):
        rs = [r for r in results if r.get("look", "") == look]
        looks[look] = {"episodes": len(rs), "success_rate": sum(r["success"] for r in rs) / len(rs)}
    n = len(results)
    measured = [r for r in results if r.get("actions_after_success") is not None]
    return {"tasks": tasks, "toolkits": toolkits, "looks": looks, "episodes": n,
            "overall": sum(r["success"] for r in results) / n if n else 0.0,
            "mean_actions_after_success": after_success_mean(results), "after_success_episodes": len(measured),
            "episodes_acting_after_success": sum(1 for r in measured if r["actions_after_success"] > 0)}


def table(summary: dict, title: str = "apps: success"):
    from rich.table import Table

    t = Table(title=title)
    for col in ("task", "toolkit", "app", "success", "episodes", "mean steps", "mean s", "acts after success"):
        t.add_column(col, justify="left" if col in ("task", "toolkit", "app") else "right")
    for name, c in summary["tasks"].items():
        after = c.get("mean_actions_after_success")
        t.add_row(name, c["toolkit"], c["app"], f"{c['success_rate']:.0%}", str(c["episodes"]),
                  f"{c['mean_steps']:.1f}", f"{c['mean_wall_seconds']:.2f}", "-" if after is None else f"{after:.1f}")
    return t
