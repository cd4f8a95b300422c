"""Scripted-expert demos on the virtual desktop, recorded as ordinary sessions (training data);
with a policy driving and the expert labelling, DAgger data. ``dw demos`` is the command line."""

from __future__ import annotations

from pathlib import Path

DAGGER_MAX_STEPS = 40  # a policy that is lost stops here (the expert needs a few steps per task)


def size_tag(w: int, h: int, s: float) -> str:
    return f"{w}x{h}@{s:g}"


def demo_recorder(path: str | Path, desk, fps: float, policy: str):
    """The recorder of one demo episode on ``desk`` (any desktop): its screen, instruction and info,
    and the cursor it starts at (``cursor0``: training's first cursor)."""
    from agent.sessions.format import SessionRecorder

    return SessionRecorder(path, desk.screen, fps, instruction=desk.instruction, policy=policy,
                           desktop=desk.info(), extra={"cursor0": list(desk.cursor or (0.5, 0.5))})


def record_demo(spec: dict, out: str, policy=None) -> dict:
    """Record one expert episode; returns a summary. ``spec``: task, seed, size, scale, fps.
    With ``policy`` (a loaded policy) that policy drives and the expert only labels (DAgger)."""
    from agent.desktops.virtual import VirtualDesktop
    from agent.loop import Agent
    from policies.builtin import ScriptedPolicy

    w, h = spec["size"]
    desk = VirtualDesktop(spec["task"], seed=spec["seed"], size=(w, h), scale=spec["scale"],
                          fps=spec.get("fps", 10.0), human_like=spec.get("human_like", True),
                          theme=spec.get("theme"), font=spec.get("font"))
    path = Path(out) / f"{spec['task']}-{size_tag(w, h, spec['scale'])}-s{spec['seed']}"
    if (path / "session.json").exists():
        return {"path": str(path), "skipped": True}
    if policy is None:
        driver = ScriptedPolicy()
    else:
        from agent.sessions.dagger import ExpertLabels

        driver = ExpertLabels(policy, spec.get("beta", 0.0))
    rec = demo_recorder(path, desk, desk.fps, driver.name)
    if policy is not None:
        driver.start(rec, spec["seed"])
    from agent.sessions.dagger import ExpertTargets

    res = Agent(desk, ExpertTargets(driver, rec), recorder=rec, max_steps=spec.get("max_steps", 200)).run()
    desk.close()
    if res.reason.startswith("recording-error"):  # a full disk: the next demo would fail too
        from agent.sessions.format import RecordingError

        raise RecordingError(f"{res.reason.removeprefix('recording-error: ')}; {path} is closed and readable "
                             "up to the failure")
    return {"path": str(path), "success": res.success, "steps": res.steps}


def record_demo_star(args: tuple[dict, str]) -> dict:
    """:func:`record_demo` of one ``(spec, out)`` pair (for a process pool's ``imap``)."""
    return record_demo(*args)


def demo_specs(tasks: list[str], episodes: int, sizes: list[tuple[int, int, float]], seed: int,
               human_like: bool = True, theme: str | None = None, font: str | None = None) -> list[dict]:
    """One spec per (task, size, episode). ``theme``/``font``: a name, "mixed" (per episode from
    the seed) or None (the classic look); see :mod:`agent.desktops.virtual.themes`."""
    specs = []
    look = {k: v for k, v in (("theme", theme), ("font", font)) if v is not None}
    for task in tasks:
        for w, h, s in sizes:
            for e in range(episodes):
                specs.append({"task": task, "seed": seed + e, "size": [w, h], "scale": s, "human_like": human_like,
                              **look})
    return specs
