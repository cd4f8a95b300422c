"""Open-loop replay: a recorded session's frames, at their recorded ``t``, into a policy whose
actions are compared with the recorded ones.

Everything runs on the session's own clock, so the same session, policy and seed give
byte-identical results on every run. Replays of virtual-desktop sessions rebuild the task
alongside (re-applying the recorded actions) so expert policies can consult its ground truth,
and the policy sees that desktop's pointer. Other sessions (a live screen) give the policy the
cursor as training does (:mod:`agent.training.dataset`): ``cursor0`` from ``session.json`` where
the recorder stored it, then each recorded pointer action's point (a drag's end).

A person's pointer moves on the way to a target (a ``human`` move followed by another move or by a
pointer action with its own point) are what training drops (``moves="intent"``): replay does the
same, so they are not compared (``compared_actions`` = ``recorded_actions`` - ``moves_skipped``),
enter no history and move no cursor.

A recorded action agrees with the policy's when the types and every other field match and, for
a pointer action, the points lie within ``tolerance_pt`` logical points of each other (distance
in physical pixels over the screen's scale). ``exact`` counts those within one physical pixel.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from agent.sessions.format import Event, Session
from agent.stats import quantile
from policies.actions import Action, Drag
from policies.base import Observation, Policy

POINTER_FIELDS = (("x", "y"), ("x2", "y2"))
POINTER_ACTIONS = ("click", "mouse_down", "mouse_up", "drag", "scroll")  # each carries its own point
TOLERANCE_PT = 8.0  # a pointer action agrees within this many logical points


def _rebuild_desktop(session: Session) -> Any:
    info = session.desktop
    if info.get("kind") == "virtual-scene":  # a workflow's scene (agent.conductor.scene)
        from agent.conductor.scene import scene_from_info

        return scene_from_info(info)
    if info.get("kind") != "virtual":
        return None
    from agent.desktops.virtual import desktop_from_info
    from agent.sessions.format import SessionError

    size = [session.screen.width, session.screen.height]
    if info.get("size", size) != size:  # the screen is checked against the video; the desktop is not
        raise SessionError(f"{session.path / 'session.json'}: 'desktop.size' {info.get('size')} differs from "
                           f"the screen {size[0]}x{size[1]}")

    return desktop_from_info(info)


def _distance_px(a: Action, b: Action, width: int, height: int) -> float:
    d = 0.0
    for fx, fy in POINTER_FIELDS:
        if hasattr(a, fx) and hasattr(b, fx):
            dx = (getattr(a, fx) - getattr(b, fx)) * width
            dy = (getattr(a, fy) - getattr(b, fy)) * height
            d = max(d, math.hypot(dx, dy))
    return d


def _same_except_coords(a: Action, b: Action) -> bool:
    ja, jb = a.to_json(), b.to_json()
    for fx, fy in POINTER_FIELDS:
        for k in (fx, fy):
            ja.pop(k, None)
            jb.pop(k, None)
    return ja == jb


@dataclass
class ReplayStats:
    recorded: int = 0
    predicted: int = 0
    type_match: int = 0
    exact: int = 0
    agree: int = 0
    distances: list[float] = field(default_factory=list)
    keys: list[bool] = field(default_factory=list)
    texts: list[bool] = field(default_factory=list)
    per_type: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    policy_errors: list[str] = field(default_factory=list)
    skipped_events: int = 0
    spurious: int = 0
    moves_skipped: int = 0


def compare_step(stats: ReplayStats, recorded: list[Event], predicted: list[Action], session: Session,
                 tolerance_pt: float) -> None:
    w, h = session.screen.width, session.screen.height
    tolerance_px = tolerance_pt * (session.screen.scale or 1.0)
    stats.recorded += len(recorded)
    stats.predicted += len(predicted)
    for i, ev in enumerate(recorded):
        ref = ev.action
        assert ref is not None
        got = predicted[i] if i < len(predicted) else None
        counts = stats.per_type[ref.type]
        counts[1] += 1
        if got is None or got.type != ref.type:
            if ref.type == "key":
                stats.keys.append(False)
            elif ref.type == "type":
                stats.texts.append(False)
            continue
        stats.type_match += 1
        counts[0] += 1
        dist = _distance_px(ref, got, w, h) if ref.point is not None else 0.0
        if ref.point is not None:
            stats.distances.append(dist)
        same = _same_except_coords(ref, got)
        if ref.type == "key":
            stats.keys.append(same)
        elif ref.type == "type":
            stats.texts.append(same)
        if same and dist <= tolerance_px:
            stats.agree += 1
        if same and dist <= 1.0:
            stats.exact += 1


def moves_on_the_way(actions: list[Event]) -> set[int]:
    """Indices of the ``human`` moves in ``actions`` (executed events, in order) that training
    drops: :func:`agent.training.dataset.redundant_moves` (kept here too: replay needs no torch)."""
    out = set()
    for i, e in enumerate(actions[:-1]):
        nxt = actions[i + 1].action
        if e.source == "human" and e.action.type == "move" and nxt.type in ("move", *POINTER_ACTIONS):
            out.add(i)
    return out


def _cursor0(session: Session) -> tuple[float, float] | None:
    """``cursor0`` of ``session.json`` (as training reads it), or None."""
    c0 = session.meta.get("cursor0")
    if isinstance(c0, list | tuple) and len(c0) == 2:
        try:
            x, y = float(c0[0]), float(c0[1])
        except (TypeError, ValueError):
            return None
        if 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0:
            return x, y
    return None


def replay_session(session: Session, policy: Policy, *, tolerance_pt: float = TOLERANCE_PT, history: int = 8) -> dict:
    """Run ``policy`` open-loop over ``session`` and return the comparison as a JSON-able dict."""
    by_frame: dict[int, list[Event]] = defaultdict(list)
    executed = session.actions()
    on_the_way = {id(executed[i]) for i in moves_on_the_way(executed)}
    for ev in executed:
        by_frame[ev.frame].append(ev)
    oracle_desktop = _rebuild_desktop(session)
    instruction = session.instruction
    policy.reset(instruction)
    # A workflow run changes the instruction at each step (conductor events): replay follows it.
    steps = {e.frame: e.raw["instruction"] for e in session.events
             if e.source == "conductor" and e.raw.get("event") == "step_start" and isinstance(e.raw.get("instruction"), str)}
    stats = ReplayStats()
    hist: list[Action] = []
    pointer = _cursor0(session)  # the cursor where no desktop is rebuilt: training's rule
    frames_decoded = 0
    last_frame = None
    # Events before the first frame (frame -1) are compared against the first frame.
    pending_early = by_frame.pop(-1, [])
    for frame in session.frames():
        frames_decoded += 1
        last_frame = frame
        if oracle_desktop is not None:
            oracle_desktop.observe()
        events = pending_early + by_frame.pop(frame.index, [])
        pending_early = []
        compared = [ev for ev in events if id(ev) not in on_the_way]
        stats.moves_skipped += len(events) - len(compared)
        if frame.index in steps:
            instruction = steps[frame.index]
            policy.reset(instruction)
            hist.clear()
            if hasattr(oracle_desktop, "on_instruction"):
                oracle_desktop.on_instruction(instruction)
        cursor = oracle_desktop.cursor if oracle_desktop is not None else pointer
        obs = Observation(frame, instruction, cursor, tuple(hist[-history:]),
                          oracle_desktop.oracle if oracle_desktop is not None else None)
        # The policy sees every frame, as in the live loop; actions it emits where none were
        # recorded count as spurious.
        try:
            predicted = policy.act(obs)
            if not isinstance(predicted, list) or not all(isinstance(a, Action) for a in predicted):
                raise TypeError(f"policy returned {type(predicted).__name__}, not a list of Actions")
        except Exception as e:
            stats.policy_errors.append(f"frame {frame.index}: {type(e).__name__}: {e}")
            predicted = []
        if not events:
            stats.spurious += len(predicted)
            continue
        if compared:  # none: the frame held only a person's moves on the way (nothing compared, nothing spurious)
            compare_step(stats, compared, predicted, session, tolerance_pt)
        for ev in events:
            assert ev.action is not None
            if oracle_desktop is not None:  # `done` too: the rebuilt task then knows its episode ended
                oracle_desktop.apply(ev.action)
            if id(ev) in on_the_way:  # as in training: no history entry, no cursor change
                continue
            hist.append(ev.action)
            if isinstance(ev.action, Drag):
                pointer = (ev.action.x2, ev.action.y2)
            elif ev.action.point is not None:
                pointer = ev.action.point
    stats.skipped_events = sum(len(v) for v in by_frame.values()) + len(pending_early)
    if oracle_desktop is not None:
        oracle_desktop.close()
    d = stats.distances
    scale = session.screen.scale or 1.0
    rec = max(1, stats.recorded)
    out = {
        "session": str(session.path),
        "policy": getattr(policy, "name", type(policy).__name__),
        "screen": session.screen.to_json(),
        "frames_decoded": frames_decoded,
        "last_t": round(last_frame.t, 3) if last_frame is not None else None,
        "recorded_actions": stats.recorded + stats.moves_skipped,
        "compared_actions": stats.recorded,  # agreement and type accuracy are over these
        "predicted_actions": stats.predicted,
        "skipped_events": stats.skipped_events,
        "spurious_actions": stats.spurious,
        "moves_skipped": stats.moves_skipped,
        "agreement": round(stats.agree / rec, 6),
        "tolerance_pt": tolerance_pt,
        "exact": round(stats.exact / rec, 6),
        "type_accuracy": round(stats.type_match / rec, 6),
        "click_distance_px": _distances(d),
        "click_distance_pt": _distances([v / scale for v in d]),
        "key_exact": round(sum(stats.keys) / len(stats.keys), 6) if stats.keys else None,
        "text_exact": round(sum(stats.texts) / len(stats.texts), 6) if stats.texts else None,
        "per_type": {k: {"matched": v[0], "recorded": v[1]} for k, v in sorted(stats.per_type.items())},
        "policy_errors": stats.policy_errors,
        "instructions_followed": len(steps),  # workflow steps: the instruction changed at each
        "damage": list(session.damage),
    }
    return out


def _distances(d: list[float]) -> dict:
    return {
        "n": len(d),
        "mean": round(sum(d) / len(d), 3) if d else None,
        "p50": round(quantile(d, 0.5), 3) if d else None,
        "p95": round(quantile(d, 0.95), 3) if d else None,
        "max": round(max(d), 3) if d else None,
    }
