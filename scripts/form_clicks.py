"""Where a policy's first click lands on the form workflow's scene: for each step of
``examples/workflows/form.yaml`` that fills a field (filled from the second row of
``examples/workflows/rows.csv``), with the steps before it done by the scene's expert (as the
workflow leaves them), the policy is given the step's instruction once, and its click counted as
inside the named field or not.

    python scripts/form_clicks.py pixel-small [--seeds 20] [--size 1920x1080] [--theme mixed]

Prints the hits per field and, for each miss, how far off it was in rows (44 points a row; ``X``:
outside the field's width as well). A diagnostic of pointing, not an evaluation: `dw eval
--workflow` is the closed-loop figure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.conductor.scene import SceneDesktop, scene_spec
from agent.conductor.workflow import load_rows, load_workflow
from policies import load_policy
from policies.actions import Click, Done
from policies.base import Observation

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = load_workflow(ROOT / "examples" / "workflows" / "form.yaml")
WORKFLOW = WORKFLOW.fill(load_rows(ROOT / "examples" / "workflows" / "rows.csv", WORKFLOW)[1])
SPEC = scene_spec(WORKFLOW.desktop)
STEPS = [(s, c.value) for s in WORKFLOW.steps for c in s.checks if c.kind == "field"]  # (step, its field)
ROW = 44.0  # points between two fields' rows


def first_click(policy, seed: int, k: int, size: tuple[int, int], theme: str) -> tuple[object, object, float]:
    """(the policy's first action, the named field, the screen's logical scale) at step k, the
    steps before it done."""
    d = SceneDesktop(SPEC, seed=seed, size=size, theme=theme, font="mixed" if theme == "mixed" else "default")
    try:
        task = d.oracle
        for prev, _ in STEPS[:k]:
            d.on_instruction(prev.instruction)
            for _ in range(8):
                acts = task.expert_actions()
                if not acts or isinstance(acts[0], Done):
                    break
                for a in acts:
                    d.apply(a)
                d.observe()
        step, name = STEPS[k]
        text = step.instruction
        policy.reset(text)
        acts = policy.act(Observation(d.observe(), text, d.cursor, ()))
        field = next(f for f in task.fields if f.name == name)
        return (acts[0] if acts else None), field, d.screen.scale
    finally:
        d.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("policy")
    p.add_argument("--seeds", type=int, default=20, help="scenes, seeds 5000 on")
    p.add_argument("--size", default="1920x1080")
    p.add_argument("--theme", default="mixed", help="a theme (with the default font), or mixed (theme and font per seed)")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    policy = load_policy(args.policy, seed=0)
    hits = {name: 0 for _, name in STEPS}
    misses: list[str] = []
    for s in range(args.seeds):
        for k, (_, name) in enumerate(STEPS):
            a, f, scale = first_click(policy, 5000 + s, k, (w, h), args.theme)
            if not isinstance(a, Click):
                misses.append(type(a).__name__)
                continue
            x, y = a.x * w / scale, a.y * h / scale
            if f.rect.contains(x, y):
                hits[name] += 1
            else:
                off = (y - (f.rect.y + f.rect.h / 2)) / ROW
                misses.append(f"{off:+.1f}" + ("" if f.rect.x <= x <= f.rect.x + f.rect.w else "X"))
    print(json.dumps({"policy": args.policy, "size": args.size, "theme": args.theme, "scenes": args.seeds,
                      "inside": sum(hits.values()), "clicks": args.seeds * len(hits),
                      "per_field": hits, "misses_in_rows": sorted(misses)}))


if __name__ == "__main__":
    main()
