"""Many workers on one machine, their policy steps batched: one forward pass for every worker whose
frame is ready.

- :class:`BatchedPixelStep` runs a :class:`policies.pixel.PixelPolicy`'s model on a batch of
  observations from different workers (each with its own instruction, history and cursor) and
  returns each worker's actions: the same actions the policy gives one observation at a time
  (test: ``tests/test_fleet.py``). Instructions are encoded once each and cached; their text caches
  are padded to the longest in the batch (masked keys: the padding changes nothing). A reading
  model's windows are read for the whole batch in one pass (each distinct window once, as the
  policy does). ``engine`` picks the forward pass: ``torch`` (the model in the policy's dtype) or
  ``onnx`` (ONNX Runtime on the CPU, exported here with a dynamic batch axis, float32 or int8
  matrix products as the policy chose); ``auto`` is ``onnx`` on a CPU where the policy itself runs
  ONNX, else ``torch``. Nothing in ``policies.pixel`` is changed for it.
- :func:`run_group` runs ``n`` virtual-desktop workers in this process, each stepping at its own pace
  (``hz`` per worker on its own phase; slots missed while a step ran late are caught up for up to
  half a second, so a hiccup of a shared machine costs no rate; beyond that they are skipped, as a
  frame-rate cap drops frames, so workers of an overloaded fleet keep their phases instead of all
  falling due together, where batches grow and cost more per row;
  ``hz=None``: as fast as it can), with one
  scheduler that gathers every worker whose step is due, renders their frames, runs one batched
  step and applies each worker's actions. Episodes restart with the next seed when they end.
- :class:`Fleet` runs groups in ``procs`` processes (each with its share of the cores and its own
  batcher), kept alive across trials, and :meth:`Fleet.search` finds the largest ``n`` that holds
  ``hz`` steps per second per worker.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from policies.actions import Action, Done
from policies.base import Observation

TEXT_CACHE = 256  # instructions whose text caches are kept


def _pad(t, length: int, dim: int):
    import torch.nn.functional as F

    extra = length - t.shape[dim]
    if extra <= 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim) + [0, extra]
    return F.pad(t, pad)


def pad_text_caches(caches: list):
    """Batch-1 :class:`TextCache` s -> one cache of batch ``len(caches)``, each padded to the longest
    instruction with masked-out keys."""
    import torch

    from policies.pixel.grounding import TextCache

    n = max(c.mask.shape[1] for c in caches)
    each = [c.parts() for c in caches]
    parts = [torch.cat([_pad(p[i], n, axis) for p in each]) for i, axis in enumerate(caches[0].text_axes().values())]
    return TextCache.from_parts(parts, words=caches[0].template is not None)


class _BatchFlatStep:
    """The model's step as a function of flat tensors, every one with a batch axis (for export)."""

    def __new__(cls, model, inputs):
        import torch

        from policies.pixel.grounding import TextCache
        from policies.pixel.runtime import OUTPUTS

        class Flat(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *args):
                n = len(inputs)
                named = dict(zip(inputs, args[:n], strict=True))
                cache = TextCache.from_parts(args[n:], words=bool(self.model.grounding.text_inputs))
                out = self.model(**named, text_cache=cache)
                return tuple(getattr(out, k) for k in OUTPUTS)

        return Flat()


class BatchedPixelStep:
    """A pixel policy's step over a batch of observations (see the module docstring)."""

    def __init__(self, policy, engine: str = "auto"):
        import torch

        from policies.pixel.policy import PixelPolicy

        if not isinstance(policy, PixelPolicy):
            raise TypeError(f"batched steps need a pixel policy, got {type(policy).__name__}")
        if policy.cfg.recent:  # each worker's past views would have to be kept apart
            raise ValueError(f"{policy.name} sees recent video (recent={policy.cfg.recent}): batched fleet "
                             "steps take one-frame models only")
        self.policy = policy
        self.cfg = policy.cfg
        self.model = policy.model
        self.device = policy.device
        if engine == "auto":
            engine = "onnx" if policy.runtime == "onnx" else "torch"
        if engine not in ("torch", "onnx"):
            raise ValueError(f"engine must be auto, torch or onnx, got {engine!r}")
        if engine == "onnx" and self.device.type != "cpu":
            raise ValueError("the onnx engine runs on the CPU")
        self.engine = engine
        self.dtype = torch.float32 if engine == "onnx" else policy.dtype
        self._texts: OrderedDict[str, tuple] = OrderedDict()
        self._drawn: OrderedDict[str, object] = OrderedDict()
        self._session = None
        self._names: list[str] = []
        self.batches = 0
        self.rows = 0

    @property
    def precision(self) -> str:
        """The batched step's arithmetic (and a reading model's reader), as the policy words it."""
        if self.engine == "onnx":
            step = "int8 matmuls" if self.policy.int8 else "float32"
        else:
            step = str(self.dtype).removeprefix("torch.")
        rd = self.policy.reader_precision
        return step if rd is None else f"{step}, {rd} reader"

    # --- per instruction ---------------------------------------------------------------------
    def _text(self, instruction: str) -> tuple:
        import torch

        from policies.pixel.processing import encode_text

        hit = self._texts.get(instruction)
        if hit is not None:
            self._texts.move_to_end(instruction)
            return hit
        ids, raw = encode_text(instruction, self.cfg.max_text)
        with torch.inference_mode():
            cache = self.model.encode_text(torch.from_numpy(ids)[None].to(self.device))
        hit = (ids, raw, cache)
        self._texts[instruction] = hit
        while len(self._texts) > TEXT_CACHE:
            self._texts.popitem(last=False)
        return hit

    def _drawn_reads(self, instruction: str):
        from policies.pixel.templates import DrawnReads

        reads = self._drawn.get(instruction)
        if reads is None:
            reads = self._drawn[instruction] = DrawnReads(self.cfg)
            while len(self._drawn) > 64:
                self._drawn.popitem(last=False)
        return reads

    # --- inputs ------------------------------------------------------------------------------
    def arrays(self, observation: Observation, raw: bytes) -> dict[str, np.ndarray]:
        """One observation's inputs (no batch axis), as :meth:`PixelPolicy.arrays` makes them."""
        from policies.pixel.codec import history_features

        # one preprocessor for every worker's frames: each frame in full (what changed is per worker)
        frame = observation.frame
        vis = self.policy.pre.pixels(frame.pixels, frame.screen.scale)
        cur = observation.cursor
        cursor = np.array([cur[0], cur[1], 1.0] if cur is not None else [0.0, 0.0, 0.0], np.float32)
        htypes, hpts = history_features(self.cfg, observation.history, raw)
        named = {"global_view": vis.global_view, "glimpses": vis.glimpses, "boxes": vis.boxes,
                 "glimpse_mask": vis.mask, "screen": vis.screen, "cursor": cursor,
                 "history_types": htypes, "history_points": hpts}
        if vis.read_glimpses is not None:
            named["read_glimpses"] = vis.read_glimpses
        return named

    def _batch(self, observations: list[Observation]) -> tuple[dict[str, np.ndarray], list[bytes], object]:
        from policies.pixel.reads import TileReads
        from policies.pixel.templates import DrawnReads

        texts = [self._text(o.instruction) for o in observations]
        n = len(observations)
        batch: dict[str, np.ndarray] = {}
        for i, (o, t) in enumerate(zip(observations, texts, strict=True)):
            # The preprocessor reuses its output buffers: each row is copied into the batch at once.
            for k, a in self.arrays(o, t[1]).items():
                if i == 0:
                    batch[k] = np.empty((n, *a.shape), a.dtype)
                batch[k][i] = a
        reads = self.policy.reads
        windows = batch.pop("read_glimpses", None)
        if isinstance(reads, DrawnReads):
            ms, ps = zip(*(self._drawn_reads(o.instruction).frame(windows[i], batch["glimpse_mask"][i], t[0])
                           for i, (o, t) in enumerate(zip(observations, texts, strict=True))), strict=True)
            batch["match"], batch["match_pos"] = np.stack(ms), np.stack(ps)
        elif isinstance(reads, TileReads):  # every row's windows read in one pass
            per = windows.shape[1] // batch["glimpse_mask"].shape[1]
            use = np.tile(batch["glimpse_mask"].astype(bool), (1, per)).reshape(-1)
            probs = reads.probs(windows.reshape(-1, *windows.shape[2:]), use)
            batch["read_probs"] = probs.reshape(n, -1, probs.shape[-1])
        return batch, [t[1] for t in texts], pad_text_caches([t[2] for t in texts])

    # --- the forward pass ----------------------------------------------------------------------
    def _export(self, batch: dict[str, np.ndarray], cache) -> None:
        import torch

        from policies.pixel.runtime import OUTPUTS, onnx_session, run_inputs

        inputs = list(run_inputs(self.cfg))
        self._text_names = cache.part_names()
        names = inputs + self._text_names
        axes = {n: {0: "batch"} for n in inputs}
        axes.update({n: {0: "batch", axis: "text"} for n, axis in cache.text_axes().items()})
        axes.update({f"out_{k}": {0: "batch"} for k in OUTPUTS})
        example = tuple(torch.from_numpy(batch[n]) for n in inputs) + tuple(self._text_parts(cache, torch=True))
        model = self.model.float().eval()
        self._session = onnx_session(_BatchFlatStep(model, inputs), example, names, [f"out_{k}" for k in OUTPUTS],
                                     axes, int8=self.policy.int8)
        self.model = model
        self._used = {i.name for i in self._session.get_inputs()}
        self._inputs = inputs

    def _text_parts(self, cache, torch: bool = False) -> list:
        parts = cache.parts()
        if torch:
            return [p.float() if p.is_floating_point() else p for p in parts]
        return [p.detach().float().numpy() if p.is_floating_point() else p.numpy() for p in parts]

    def forward(self, batch: dict[str, np.ndarray], cache):
        import torch

        from policies.pixel.modeling import PixelOutput
        from policies.pixel.runtime import OUTPUTS

        if self.engine == "onnx":
            if self._session is None:
                self._export(batch, cache)
            feed = {n: batch[n] for n in self._inputs if n in self._used}
            feed.update({n: p for n, p in zip(self._text_names, self._text_parts(cache), strict=True)
                         if n in self._used})
            out = self._session.run(None, feed)
            return PixelOutput(**{k: torch.from_numpy(v) for k, v in zip(OUTPUTS, out, strict=True)})
        with torch.inference_mode():
            return self.model(**{k: torch.from_numpy(a).to(self.device) for k, a in batch.items()}, text_cache=cache)

    def step(self, observations: list[Observation]) -> list[list[Action]]:
        """Each observation's actions, in order: one batched forward pass."""
        from policies.pixel.codec import decode
        from policies.pixel.runtime import OUTPUTS

        if not observations:
            return []
        batch, raws, cache = self._batch(observations)
        out = self.forward(batch, cache)
        if self.engine == "torch":  # decoding reads float32 on the CPU
            for k in OUTPUTS:
                v = getattr(out, k)
                if v is not None:
                    setattr(out, k, v.float().cpu())
        self.batches += 1
        self.rows += len(observations)
        return [decode(self.cfg, out, raw, i) for i, raw in enumerate(raws)]


# --- workers ----------------------------------------------------------------------------------
@dataclass
class WorkerStats:
    steps: int = 0
    actions: int = 0
    episodes: int = 0
    step_ns: list[int] = field(default_factory=list)
    lag_ns: list[int] = field(default_factory=list)


class _Worker:
    def __init__(self, index: int, size: tuple[int, int], seed: int, tasks: list[str]):
        self.index = index
        self.size = size
        self.tasks = tasks
        self.seed = seed
        self.history: deque[Action] = deque(maxlen=8)
        self.stats = WorkerStats()
        self._new_episode()

    def _new_episode(self) -> None:
        from agent.desktops.virtual import VirtualDesktop

        task = self.tasks[(self.index + self.seed) % len(self.tasks)]
        self.desk = VirtualDesktop(task, seed=self.seed, size=self.size)
        self.history.clear()
        self.steps_in_episode = 0
        self.seed += 1_000

    def observe(self) -> Observation:
        d = self.desk
        return Observation(d.observe(), d.instruction, d.cursor, tuple(self.history), None)

    def apply(self, actions: list[Action], max_steps: int) -> None:
        from agent.desktops import DesktopError

        for a in actions:
            if isinstance(a, Done):
                break
            try:
                self.desk.apply(a)
            except (DesktopError, ValueError):
                continue
            self.history.append(a)
            self.stats.actions += 1
        self.steps_in_episode += 1
        if self.desk.finished or any(isinstance(a, Done) for a in actions) or self.steps_in_episode >= max_steps:
            self.desk.close()
            self.stats.episodes += 1
            self._new_episode()


def _stepper(policy, engine: str, size: tuple[int, int] = (1280, 720)):
    """A function from observations to their actions: batched for pixel policies, else one by one;
    warmed on two frames (an ONNX export happens on the first batch)."""
    from agent.desktops.virtual import VirtualDesktop, task_names

    try:
        b = BatchedPixelStep(policy, engine)
        step, used, precision = b.step, b.engine, b.precision
    except TypeError:
        def step(observations):
            return [policy.act(o) for o in observations]
        used, precision = "sequential", getattr(policy, "precision", "")
    desks = [VirtualDesktop(t, seed=0, size=size) for t in task_names()[:2]]
    step([Observation(d.observe(), d.instruction, d.cursor, (), None) for d in desks])
    return step, used, precision


def run_group(stepper, n: int, seconds: float, hz: float | None = 10.0, size: tuple[int, int] = (1280, 720),
              seed: int = 0, first: int = 0, warmup: float = 1.0, max_steps: int = 60,
              start_at: float | None = None, max_batch: int | None = None, catch_up: float = 0.5) -> dict:
    """Run ``n`` workers in this process for ``warmup + seconds``; statistics cover the last ``seconds``.

    ``start_at``: a ``time.monotonic()`` at which to begin (processes of one fleet start together).
    ``max_batch``: at most this many workers per forward pass, the longest due first (None: every
    worker whose step is due). ``catch_up``: seconds of missed slots a late worker makes up (a
    preempted process's hiccup); later than that, it skips to its next slot.
    Returns per-worker steps, actions, step latencies (frame rendered -> actions applied, in ns) and
    lags (due -> frame rendered), and the batch sizes.
    """
    from agent.desktops.virtual import task_names

    tasks = task_names()
    workers = [_Worker(first + i, size, seed + first + i, tasks) for i in range(n)]
    period = 1.0 / hz if hz else 0.0
    rng = np.random.default_rng(seed + first)
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.monotonic()))
    t0 = time.monotonic()
    due = [t0 + (rng.uniform(0, period) if period else 0.0) for _ in workers]  # each its own phase
    measure_from, end = t0 + warmup, t0 + warmup + seconds
    batch_sizes: list[int] = []
    clock = time.monotonic
    while True:
        now = clock()
        if now >= end:
            break
        ready = [i for i, d in enumerate(due) if d <= now]
        if not ready:
            time.sleep(max(0.0, min(min(due), end) - now))
            continue
        if max_batch is not None and len(ready) > max_batch:
            ready = sorted(ready, key=due.__getitem__)[:max_batch]
        counted = now >= measure_from
        obs, rendered = [], []
        for i in ready:
            obs.append(workers[i].observe())
            rendered.append(time.perf_counter_ns())
        actions = stepper(obs)
        for i, acts, r in zip(ready, actions, rendered, strict=True):
            w = workers[i]
            w.apply(acts, max_steps)
            if counted:
                w.stats.steps += 1
                w.stats.step_ns.append(time.perf_counter_ns() - r)
                w.stats.lag_ns.append(int(max(0.0, now - due[i]) * 1e9))
            if period:  # the next slot on the worker's own phase: caught up within ``catch_up``, else skipped
                late = clock() - due[i]
                due[i] += period if late < catch_up + period else period * math.ceil(late / period)
            else:
                due[i] = clock()
        if counted:
            batch_sizes.append(len(ready))
    for w in workers:
        w.desk.close()
    return {"workers": [{"index": w.index, "steps": w.stats.steps, "actions": w.stats.actions,
                         "episodes": w.stats.episodes, "step_ns": w.stats.step_ns, "lag_ns": w.stats.lag_ns}
                        for w in workers],
            "batch_sizes": batch_sizes, "seconds": seconds}


# --- processes --------------------------------------------------------------------------------
def _serve(conn, policy_name: str, device: str, engine: str, threads: int, size: tuple[int, int]) -> None:
    """A fleet process: load the policy once, then run groups on request until told to stop."""
    import torch

    torch.set_num_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:
        pass
    from policies import load_policy

    try:
        policy = load_policy(policy_name, device=device)
        step, used, precision = _stepper(policy, engine, size)
        conn.send({"ready": used, "precision": precision})
    except Exception as e:  # reported to the parent, which raises it
        conn.send({"error": f"{type(e).__name__}: {e}"})
        return
    while True:
        msg = conn.recv()
        if msg is None:
            return
        try:
            conn.send(run_group(step, **msg))
        except Exception as e:
            conn.send({"error": f"{type(e).__name__}: {e}"})


def _recv(conn, proc, timeout: float | None = None):
    """The next message from a fleet process; RuntimeError if it died (or ``timeout`` passed) first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not conn.poll(0.2):
        if not proc.is_alive():
            raise RuntimeError(f"a fleet process ended (exit code {proc.exitcode}) before answering")
        if deadline is not None and time.monotonic() > deadline:
            raise RuntimeError("a fleet process did not answer in time")
    return conn.recv()


class Fleet:
    """Worker groups in ``procs`` processes (``procs=0``: in this process), each running one batcher."""

    def __init__(self, policy="pixel-tiny", device: str = "cpu", procs: int = 1, engine: str = "auto",
                 size: tuple[int, int] = (1280, 720), threads: int | None = None, max_batch: int | None = None):
        """``policy``: a name for :func:`policies.load_policy`, or (``procs=0`` only) a loaded policy;
        ``max_batch``: the default of :meth:`run`'s (see :func:`run_group`)."""
        self.policy_name, self.device, self.engine, self.size = policy, device, engine, size
        self.max_batch = max_batch
        self.procs = procs
        cores = os.cpu_count() or 1
        self.threads = threads or max(1, cores // max(1, procs))
        self._conns: list = []
        self._procs: list = []
        self._local = None
        if procs == 0:
            from policies import load_policy

            self.policy = load_policy(policy, device=device) if isinstance(policy, str) else policy
            self._local, self.engine_used, self.precision = _stepper(self.policy, engine, size)
            return
        ctx = mp.get_context("spawn")
        for _ in range(procs):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_serve, args=(child, policy, device, engine, self.threads, size), daemon=True)
            p.start()
            self._conns.append(parent)
            self._procs.append(p)
        try:
            hellos = [_recv(c, p, 600) for c, p in zip(self._conns, self._procs, strict=True)]
        except RuntimeError:
            self.close()
            raise
        bad = [h["error"] for h in hellos if "error" in h]
        if bad:
            self.close()
            raise RuntimeError(f"a fleet process could not load {policy}: {bad[0]}")
        self.engine_used = hellos[0]["ready"]
        self.precision = hellos[0]["precision"]

    def run(self, n: int, seconds: float = 5.0, hz: float | None = 10.0, seed: int = 0, warmup: float = 1.0,
            max_batch: int | None = None) -> dict:
        """``n`` workers for ``seconds`` (after ``warmup``): per-worker rates and latencies."""
        kw = {"seconds": seconds, "hz": hz, "size": self.size, "seed": seed, "warmup": warmup,
              "max_batch": self.max_batch if max_batch is None else max_batch}
        if self._local is not None:
            parts = [run_group(self._local, n, **kw)]
        else:
            share = [n // self.procs + (1 if i < n % self.procs else 0) for i in range(self.procs)]
            start_at = time.monotonic() + 0.2
            firsts = np.cumsum([0] + share[:-1])
            live = [(c, p, s, int(f)) for c, p, s, f in zip(self._conns, self._procs, share, firsts, strict=True) if s]
            for c, _, s, f in live:
                c.send({"n": s, "first": f, "start_at": start_at, **kw})
            parts = [_recv(c, p, 120 + 4 * (seconds + warmup)) for c, p, _, _ in live]
            bad = [p["error"] for p in parts if "error" in p]
            if bad:
                raise RuntimeError(f"a fleet process failed: {bad[0]}")
        return summarise(parts, n, hz)

    def search(self, hz: float = 10.0, seconds: float = 5.0, start: int = 4, limit: int = 256,
               known: dict[int, dict] | None = None) -> dict:
        """The largest ``n`` whose every worker holds ``hz`` steps per second: doubling from ``start``
        (downwards by bisection when it fails), then bisection to about 6 %. ``known``: runs already
        made, by worker count."""
        trials: dict[int, dict] = dict(known or {})

        def holds(n: int) -> bool:
            if n not in trials:
                trials[n] = self.run(n, seconds, hz)
            return trials[n]["holds"]

        lo, hi = 0, None
        n = start
        while n <= limit:
            if holds(n):
                lo, n = n, n * 2
            else:
                hi = n
                break
        if hi is None:
            hi = limit + 1
        if lo == 0 and hi == start:  # below the first try: bisect down from it
            lo = 0
        while hi - lo > 1 and hi - lo > max(1, lo // 16):  # to about 6 %
            mid = (lo + hi) // 2
            if mid == 0:
                break
            if holds(mid):
                lo = mid
            else:
                hi = mid
        return {"workers_at_hz": lo, "hz": hz,
                "trials": [{"workers": k, **{f: v[f] for f in ("holds", "min_rate", "median_rate", "actions_per_s",
                                                                "mean_batch")}} for k, v in sorted(trials.items())]}

    def close(self) -> None:
        for c in self._conns:
            try:
                c.send(None)
            except (OSError, BrokenPipeError):
                pass
        for p in self._procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
        self._conns, self._procs = [], []

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def summarise(parts: list[dict], n: int, hz: float | None, tolerance: float = 0.98) -> dict:
    """Per-worker rates and the fleet's latencies from the groups' results. A fleet ``holds`` ``hz``
    when its slowest worker stepped at ``tolerance * hz`` or more (the window's two ends cost up to
    one step) and no worker fell a whole period behind at the median."""
    from agent.stats import percentiles

    workers = [w for p in parts for w in p["workers"]]
    seconds = parts[0]["seconds"]
    rates = sorted(w["steps"] / seconds for w in workers)
    steps = [s for w in workers for s in w["step_ns"]]
    lags = [s for w in workers for s in w["lag_ns"]]
    batches = [b for p in parts for b in p["batch_sizes"]]
    lag = percentiles(lags)
    holds = bool(rates) and hz is not None and rates[0] >= tolerance * hz and lag["p50_ms"] < 1000.0 / hz
    return {
        "workers": n,
        "hz": hz,
        "seconds": seconds,
        "holds": holds,
        "min_rate": round(rates[0], 2) if rates else 0.0,
        "median_rate": round(float(np.median(rates)), 2) if rates else 0.0,
        "per_worker_rate": [round(r, 2) for r in rates],
        "steps_per_s": round(sum(w["steps"] for w in workers) / seconds, 1),
        "actions_per_s": round(sum(w["actions"] for w in workers) / seconds, 1),
        "episodes": sum(w["episodes"] for w in workers),
        "step": percentiles(steps),
        "lag": lag,
        "mean_batch": round(float(np.mean(batches)), 2) if batches else 0.0,
        "batches": len(batches),
    }


__all__ = ["BatchedPixelStep", "Fleet", "WorkerStats", "pad_text_caches", "run_group", "summarise"]
