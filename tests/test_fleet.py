"""Batched policy steps for a fleet of workers: a batch of observations from different workers
(different tasks, instructions, histories) gives each the actions the policy gives it alone; a
small fleet runs and reports its rates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from policies.actions import Click, Move


def observations(n: int):
    from agent.desktops.virtual import VirtualDesktop, task_names
    from policies.base import Observation

    tasks = task_names()
    out = []
    for i in range(n):
        d = VirtualDesktop(tasks[(3 * i) % len(tasks)], seed=i, size=(640, 480))
        history = (Move(0.1 * (i + 1), 0.2), Click(0.5, 0.5)) if i % 2 else ()
        out.append(Observation(d.observe(), d.instruction, d.cursor, history, None))
    assert len({o.instruction for o in out}) > 1  # instructions of different lengths are padded
    return out


def one_by_one(policy, obs):
    return [policy.act(o) for o in obs]


def same(batched, alone, tol=1e-4):
    """The same actions, coordinates equal up to float rounding (a batch sums in another order)."""
    assert len(batched) == len(alone)
    for bs, als in zip(batched, alone, strict=True):
        assert [type(a) for a in bs] == [type(a) for a in als], (bs, als)
        for a, b in zip(bs, als, strict=True):
            for f in dataclasses.fields(a):
                va, vb = getattr(a, f.name), getattr(b, f.name)
                assert va == pytest.approx(vb, abs=tol) if isinstance(va, float) else va == vb, (a, b)
    return True


@pytest.mark.parametrize("name", ["pixel-tiny", "pixel-small"])
def test_batched_torch_step_equals_one_by_one(name):
    from agent.fleet import BatchedPixelStep
    from policies.pixel import load_pixel_policy

    policy = load_pixel_policy(name, dtype="float32", runtime="torch")
    obs = observations(5)
    batched = BatchedPixelStep(policy, engine="torch")
    assert same(batched.step(obs), one_by_one(policy, obs))
    # the outputs themselves agree closely, not only their argmax
    b, raws, cache = batched._batch(obs)
    out = batched.forward(b, cache)
    policy.reset(obs[3].instruction)
    alone = policy.run(policy.arrays(obs[3]))
    assert torch.allclose(out.type_logits[3], alone.type_logits[0], atol=1e-4)
    assert torch.allclose(out.pointer_logits[3], alone.pointer_logits[0], atol=1e-3)


def test_batched_onnx_step_equals_one_by_one():
    pytest.importorskip("onnxruntime")
    from agent.fleet import BatchedPixelStep
    from policies.pixel import load_pixel_policy

    policy = load_pixel_policy("pixel-tiny", dtype="float32", runtime="onnx")
    obs = observations(4)
    batched = BatchedPixelStep(policy, engine="onnx")
    assert same(batched.step(obs[:2]), one_by_one(policy, obs[:2]))  # exported at batch 2
    assert same(batched.step(obs), one_by_one(policy, obs))  # runs at any batch
    assert same(batched.step(obs[:1]), one_by_one(policy, obs[:1]))


def test_a_fleet_names_the_readers_arithmetic_as_its_policy_does(monkeypatch):
    """The batched step reads with its policy's reader, so it reports that reader's arithmetic."""
    pytest.importorskip("onnxruntime")
    from agent.fleet import BatchedPixelStep
    from policies.pixel import load_pixel_policy

    for int8_reader in ("1", "0"):
        monkeypatch.setenv("DW_PIXEL_INT8_READER", int8_reader)
        policy = load_pixel_policy("pixel-small", runtime="onnx")
        step = BatchedPixelStep(policy, engine="onnx")
        assert policy.reader_precision in ("int8", "bfloat16", "float32")
        assert step.precision.endswith(f", {policy.reader_precision} reader") and policy.precision == step.precision
    assert policy.reader_precision != "int8"


def test_small_fleet_in_process():
    from agent.fleet import Fleet
    from policies.pixel import load_pixel_policy

    with Fleet(load_pixel_policy("pixel-tiny", runtime="torch"), procs=0, size=(640, 480)) as fleet:
        r = fleet.run(3, seconds=0.6, hz=5.0, warmup=0.0)  # the first round always counts, however slow
    assert r["workers"] == 3 and len(r["per_worker_rate"]) == 3
    assert r["steps_per_s"] > 0 and r["step"]["n"] > 0
    assert set(r) >= {"holds", "min_rate", "actions_per_s", "lag", "mean_batch"}
    assert np.isfinite(r["step"]["p50_ms"])


@pytest.mark.parametrize("capacity", [0, 5, 11, 32, 40, 300])
def test_search_finds_the_largest_fleet_that_holds(capacity):
    from agent.fleet import Fleet

    fleet = object.__new__(Fleet)  # no processes: the runs are simulated
    runs = []

    def run(n, seconds, hz):
        runs.append(n)
        return {"holds": n <= capacity, "min_rate": 10.0, "median_rate": 10.0, "actions_per_s": 1.0, "mean_batch": 1.0}

    fleet.run = run
    found = fleet.search(10.0, 1.0, start=32, limit=256)["workers_at_hz"]
    assert found <= capacity and (found >= capacity * 0.94 - 1 or found == 256)
    assert len(runs) == len(set(runs)) <= 12
