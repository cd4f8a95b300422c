"""Scale-out backends for evaluation and replay: episodes and sessions become tasks.

``local`` runs tasks on a :class:`concurrent.futures.ProcessPoolExecutor` (spawn context;
``workers=1`` runs them in this process); ``ray`` runs them on Ray actors, one per worker, on a
local Ray or an existing cluster (``address``). Both give the same results in the same order.

* **Policies load once per worker.** A pool process loads the policy in its initializer and a
  Ray actor in its constructor, into a per-process cache keyed by (spec, seed, device); tasks
  reuse it. Policies are ``reset`` at the start of every episode or replay, which is what makes
  reuse deterministic (the random policy re-seeds there).
* **Tasks carry names, not bytes.** A replay task is a session *path*: every worker must see
  the same path (shared storage mounted at the same place); an episode task is its spec.
* **Failures stay with their task.** An exception inside a task (a corrupt session, a policy
  that cannot load) and a worker that dies under a task (``os._exit``, OOM kill, segfault) both
  cost that task one attempt; it is retried once (``retries=1``), then reported in its place in
  the results as ``{"session": ..., "error": "...", "attempts": 2}`` (episodes keep their spec
  fields instead of ``session``). The run goes on. When a pool process dies while several tasks
  are in flight, the pool cannot tell which one killed it: those tasks are re-run one at a time
  (uncharged), so only the culprit is charged. Ray reports the dead actor per task.
* **A hung task is cut off** when ``task_timeout`` is given (``--task-timeout``): its worker is
  killed, the task is charged one attempt (``"timed out after N s"``) and retried like a crash;
  tasks in flight beside it on the pool are re-run uncharged. With a timeout, one local worker
  runs in a pool process rather than in this process, since only a process can be killed.
* **Results are ordered by task** (episode spec order, session path order), whichever worker
  finished first, so the ``results`` part is identical across backends and worker counts.
  Wall-clock figures live apart, under ``throughput`` (and, for episodes, the timing fields
  in :data:`TIMING_FIELDS`); :func:`deterministic_view` drops them for comparisons.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import UserError

BACKENDS = ("local", "ray")
KINDS = ("episode", "replay")
RAY_INSTALL_HINT = "pip install 'digital-worker[ray]'  (or: pip install 'ray>=2.9')"
# Per-episode fields measured on the wall clock: they differ from run to run on any backend.
TIMING_FIELDS = ("wall_seconds", "infer_ms_mean")
SPEC_FIELDS = ("task", "seed", "size", "scale")
WARM_MODULES = ("agent.desktops.virtual.evaluate", "agent.loop", "agent.desktops.virtual", "agent.sessions.replay", "agent.sessions.format")


# --------------------------------------------------------------------------------------------
# The worker side: runs in a pool process, a Ray actor, or (workers=1) in this process.

_POLICIES: dict[tuple, Any] = {}
_LOAD_ERRORS: dict[tuple, str] = {}
LOADS = {"count": 0}  # policies loaded by this process (tests and the benchmark read it)


def load_policy_spec(spec: str, *, seed: int = 0, device: str = "cpu"):
    """``load_policy`` plus ``package.module:factory`` for policies that live outside the
    registry (plugins, test policies); the factory is called with ``seed=`` and ``device=``."""
    from policies import load_policy

    if ":" in spec and not Path(spec).exists():
        mod_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            from policies.base import PolicyError

            raise PolicyError(f"policy {spec!r}: cannot import {attr} from {mod_name}: {e}") from None
        return factory(seed=seed, device=device)
    return load_policy(spec, seed=seed, device=device)


def _policy(spec: str, seed: int, device: str):
    key = (spec, seed, device)
    if key in _LOAD_ERRORS:
        raise RuntimeError(_LOAD_ERRORS[key])
    if key not in _POLICIES:
        try:
            _POLICIES[key] = load_policy_spec(spec, seed=seed, device=device)
        except Exception as e:
            _LOAD_ERRORS[key] = f"cannot load policy {spec!r}: {type(e).__name__}: {e}"
            raise RuntimeError(_LOAD_ERRORS[key]) from None
        LOADS["count"] += 1
    return _POLICIES[key]


def init_worker(spec: str, seed: int, device: str, threads: int | None = 1) -> None:
    """Load the policy once for this process and keep numeric libraries to ``threads`` threads
    (so N workers on N cores do not oversubscribe them). Load errors surface per task."""
    if threads:
        try:
            import cv2

            cv2.setNumThreads(threads)
        except ImportError:  # pragma: no cover - a core dependency
            pass
    for mod in WARM_MODULES:  # import what tasks need now, so the first task is not slower
        try:
            importlib.import_module(mod)
        except ImportError:  # pragma: no cover - surfaces in the task that needs it
            pass
    try:
        _policy(spec, seed, device)
    except Exception:
        pass
    if threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def execute(kind: str, item: dict, spec: str, seed: int, device: str, options: dict) -> dict:
    """Run one task; never raises: ``{"ok": True, "result": ...}`` or ``{"ok": False, "error": ...}``."""
    try:
        policy = _policy(spec, seed, device)
        if kind == "episode":
            from agent.desktops.virtual.evaluate import MAX_STEPS, run_episode

            result = run_episode(item, policy, max_steps=options.get("max_steps", MAX_STEPS))
        elif kind == "replay":
            from agent.sessions.format import open_session
            from agent.sessions.replay import TOLERANCE_PT, replay_session

            session = open_session(item["session"])
            try:
                result = replay_session(session, policy, tolerance_pt=options.get("tolerance_pt", TOLERANCE_PT))
            except ImportError as e:
                raise RuntimeError(f"cannot rebuild its desktop: {e}") from None
        else:
            raise ValueError(f"unknown task kind {kind!r}")
        return {"ok": True, "result": result, **_whoami()}
    except UserError as e:  # already one line naming the file at fault (SessionError)
        return {"ok": False, "error": str(e), **_whoami()}
    except Exception as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}", **_whoami()}


def _whoami() -> dict:
    return {"pid": os.getpid(), "loads": LOADS["count"]}


class PolicyWorker:
    """A Ray actor's body: holds the policy for its lifetime and runs tasks one at a time."""

    def __init__(self, spec: str, seed: int, device: str, threads: int | None = 1):
        self.args = (spec, seed, device)
        init_worker(spec, seed, device, threads)

    def run(self, kind: str, item: dict, options: dict) -> dict:
        return execute(kind, item, *self.args, options)

    def loads(self) -> int:
        return LOADS["count"]


# --------------------------------------------------------------------------------------------
# The driver side.


@dataclass
class RunReport:
    """What a run gives back: one result per task in task order, and how fast it went."""

    results: list[dict]
    throughput: dict
    failed: int = 0
    policy_loads: dict[int, int] = field(default_factory=dict)  # worker pid -> policies loaded there


def _identity(kind: str, item: dict) -> dict:
    if kind == "replay":
        return {"session": item["session"]}
    return {k: item[k] for k in SPEC_FIELDS if k in item}


def _failure(kind: str, item: dict, error: str, attempts: int) -> dict:
    return {**_identity(kind, item), "error": error, "attempts": attempts}


class _Book:
    """Attempts, results and retries, shared by both backends."""

    def __init__(self, kind: str, items: list[dict], retries: int, on_result: Callable[[dict], None] | None):
        self.kind, self.items, self.retries, self.on_result = kind, items, retries, on_result
        self.results: list[dict | None] = [None] * len(items)
        self.attempts = [0] * len(items)
        self.queue: deque[int] = deque(range(len(items)))
        self.loads: dict[int, int] = {}  # worker pid -> policies it has loaded
        self.retried = 0
        self.ready_at: float | None = None  # when every worker was up with its policy loaded

    def done(self, i: int, out: dict) -> None:
        if "pid" in out:
            self.loads[out["pid"]] = max(self.loads.get(out["pid"], 0), out.get("loads", 0))
        if out.get("ok"):
            self._finish(i, out["result"])
        else:
            self.fail(i, out["error"])

    def fail(self, i: int, error: str) -> None:
        self.attempts[i] += 1
        if self.attempts[i] <= self.retries:
            self.retried += 1
            self.queue.appendleft(i)  # retry soon, not after every other task
        else:
            self._finish(i, _failure(self.kind, self.items[i], error, self.attempts[i]))

    def _finish(self, i: int, result: dict) -> None:
        self.results[i] = result
        if self.on_result:
            self.on_result(result)


def _ready(delay: float) -> int:
    time.sleep(delay)
    return os.getpid()


def _run_inprocess(book: _Book, spec: str, seed: int, device: str, options: dict) -> None:
    init_worker(spec, seed, device, threads=None)
    book.ready_at = time.perf_counter()
    while book.queue:
        i = book.queue.popleft()
        book.done(i, execute(book.kind, book.items[i], spec, seed, device, options))


def _kill_pool(pool) -> None:
    """Stop a pool whose workers may be stuck in a task: kill them, then shut it down."""
    kill = getattr(pool, "kill_workers", None)  # Python >= 3.14
    if kill is not None:
        kill()
    else:
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.kill()
    pool.shutdown(wait=True, cancel_futures=True)


def _overdue(started: dict, timeout: float | None) -> tuple[list, float | None]:
    """The keys of ``started`` (key -> start time) running longer than ``timeout``, and how long
    to wait for the next one to become overdue (None: no timeout)."""
    if timeout is None or not started:
        return [], None
    now = time.perf_counter()
    late = [k for k, t in started.items() if now - t >= timeout]
    return late, max(0.0, min(timeout - (now - t) for t in started.values()))


def _run_pool(book: _Book, workers: int, spec: str, seed: int, device: str, options: dict,
              timeout: float | None = None) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // workers)

    def spawn() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init_worker,
                                   initargs=(spec, seed, device, threads))

    def new_pool() -> ProcessPoolExecutor:
        """A pool with every worker started and its policy loaded, so neither the throughput
        figures nor a task's timeout clock count a worker's start-up."""
        pool = spawn()
        try:
            seen: set[int] = set()
            for _ in range(20):
                seen |= {f.result() for f in [pool.submit(_ready, 0.05) for _ in range(workers)]}
                if len(seen) >= workers:
                    break
        except BrokenProcessPool:  # a worker died starting: the tasks will find out, one by one
            pool.shutdown(wait=True, cancel_futures=True)
            pool = spawn()
        return pool

    pool = new_pool()
    book.ready_at = time.perf_counter()
    suspects: deque[int] = deque()  # in flight when a worker died beside others: run one at a time
    inflight: dict = {}  # future -> (task index, when it was submitted: a free worker takes it at once)
    try:
        while book.queue or suspects or inflight:
            limit = 1 if suspects else workers
            while len(inflight) < limit and (suspects or book.queue):
                i = suspects.popleft() if suspects else book.queue.popleft()
                fut = pool.submit(execute, book.kind, book.items[i], spec, seed, device, options)
                inflight[fut] = (i, time.perf_counter())
            _, wait_s = _overdue({f: t for f, (_, t) in inflight.items()}, timeout)
            finished, _ = wait(inflight, timeout=wait_s, return_when=FIRST_COMPLETED)
            late, _ = _overdue({f: t for f, (_, t) in inflight.items() if f not in finished}, timeout)
            if late:  # a worker is stuck: charge its task, re-run the others uncharged, new pool
                _kill_pool(pool)
                for fut, (i, _) in list(inflight.items()):
                    if fut in late:
                        book.fail(i, f"timed out after {timeout:g} s")
                    elif fut in finished and not fut.exception():
                        book.done(i, fut.result())
                    else:
                        book.queue.appendleft(i)
                inflight.clear()
                pool = new_pool()
                continue
            broken = []
            for fut in finished:
                i, _ = inflight.pop(fut)
                try:
                    book.done(i, fut.result())
                except BrokenProcessPool:
                    broken.append(i)
                except Exception as e:  # the result could not come back (e.g. unpicklable)
                    book.fail(i, f"{type(e).__name__}: {e}")
            if not broken:
                continue
            # The pool is dead: every task still in flight fails with it.
            for fut, (i, _) in list(inflight.items()):
                try:
                    book.done(i, fut.result())
                except Exception:
                    broken.append(i)
            inflight.clear()
            pool.shutdown(wait=True, cancel_futures=True)
            if len(broken) == 1:
                book.fail(broken[0], "worker process died while running this task (crashed or was killed)")
            else:
                suspects.extend(sorted(broken))
            pool = new_pool()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"--backend ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


def _ray_connect(ray, address: str | None, workers: int | None) -> bool:
    """Connect to (or start) Ray; True when this call started it (and should shut it down)."""
    import logging

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "configure_logging": True}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = workers or os.cpu_count() or 1
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise UserError(f"cannot start or reach {where}: {str(e).splitlines()[0] if str(e) else e}") from None
    return True


def _run_ray(book: _Book, workers: int | None, address: str | None, spec: str, seed: int, device: str,
             options: dict, timeout: float | None = None) -> int:
    ray = _import_ray()
    started = _ray_connect(ray, address, workers)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(workers or cpus, cpus, len(book.items) or 1))
        if workers and workers > cpus:
            print(f"ray: {workers} workers asked for, the cluster has {cpus} CPUs: using {n}", file=sys.stderr)
        actor_cls = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(PolicyWorker)
        actors = [actor_cls.remote(spec, seed, device, 1) for _ in range(n)]
        try:  # every actor up with its policy loaded before timing tasks
            ray.get([a.loads.remote() for a in actors])
        except ray.exceptions.RayError:
            pass  # a dead actor is found, and replaced, by the first task sent to it
        book.ready_at = time.perf_counter()

        def fresh_actor():
            """A replacement actor, up with its policy loaded before its first task's clock starts."""
            actor = actor_cls.remote(spec, seed, device, 1)
            try:
                ray.get(actor.loads.remote(), timeout=timeout)
            except ray.exceptions.RayError:  # it died or hangs starting: its first task finds out
                pass
            return actor

        idle = deque(actors)
        inflight: dict = {}  # ref -> (index, actor, when it was sent to that idle actor)
        while book.queue or inflight:
            while idle and book.queue:
                i = book.queue.popleft()
                actor = idle.popleft()
                inflight[actor.run.remote(book.kind, book.items[i], options)] = (i, actor, time.perf_counter())
            _, wait_s = _overdue({r: t for r, (*_, t) in inflight.items()}, timeout)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=wait_s)
            late, _ = _overdue({r: t for r, (*_, t) in inflight.items() if r not in ready}, timeout)
            for ref in late:  # stuck: kill its actor, charge the task, start a fresh actor
                i, actor, _ = inflight.pop(ref)
                ray.kill(actor)
                book.fail(i, f"timed out after {timeout:g} s")
                idle.append(fresh_actor())
            for ref in ready:
                i, actor, _ = inflight.pop(ref)
                try:
                    book.done(i, ray.get(ref))
                    idle.append(actor)
                except ray.exceptions.RayActorError as e:
                    book.fail(i, f"worker process died while running this task: {_first_line(e)}")
                    ray.kill(actor)
                    idle.append(fresh_actor())
                except ray.exceptions.RayError as e:
                    book.fail(i, f"{type(e).__name__}: {_first_line(e)}")
                    idle.append(actor)
        for a in idle:
            ray.kill(a)
        return n
    finally:
        if started:
            ray.shutdown()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(e).__name__


def run_tasks(kind: str, items: list[dict], policy_spec: str, *, backend: str = "local", workers: int | None = 1,
              address: str | None = None, seed: int = 0, device: str = "cpu", options: dict | None = None,
              retries: int = 1, on_result: Callable[[dict], None] | None = None,
              progress: str | None = None, task_timeout: float | None = None) -> RunReport:
    """Run every task of ``items`` (episode specs or ``{"session": path}``) with ``policy_spec``.

    ``task_timeout``: seconds one attempt at a task may run before its worker is killed.

    ``progress`` names a progress bar on stderr (shown on a terminal). Raises :class:`UserError`
    for a bad backend, a policy the driver cannot load, or Ray missing or unreachable.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose local or ray")
    if workers is not None and workers < 1:
        raise UserError("--workers must be at least 1")
    if task_timeout is not None and not task_timeout > 0:
        raise UserError("--task-timeout must be a positive number of seconds")
    if backend == "ray":
        _import_ray()  # fail fast, before any work
    _check_policy(policy_spec, seed)
    options = dict(options or {})
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=progress, unit=kind if kind == "episode" else "session",
                   file=sys.stderr, disable=None)

    def report(r: dict) -> None:
        if bar is not None:
            bar.update(1)
        if on_result:
            on_result(r)

    book = _Book(kind, list(items), retries, report)
    t0 = time.perf_counter()
    try:
        if backend == "ray":
            n = _run_ray(book, workers, address, policy_spec, seed, device, options, task_timeout)
        else:
            n = min(workers or 1, max(1, len(items)))
            if n == 1 and task_timeout is None:
                _run_inprocess(book, policy_spec, seed, device, options)
            else:
                _run_pool(book, n, policy_spec, seed, device, options, task_timeout)
    finally:
        if bar is not None:
            bar.close()
    t1 = time.perf_counter()
    startup = (book.ready_at or t0) - t0
    results = [r for r in book.results if r is not None]
    failed = sum(1 for r in results if "error" in r)
    load_errors = {r["error"] for r in results if str(r.get("error", "")).startswith("RuntimeError: cannot load policy")}
    if results and failed == len(results) and len(load_errors) == 1:  # no worker could load it: one clear line
        raise UserError(load_errors.pop().removeprefix("RuntimeError: "))
    return RunReport(results, _throughput(kind, results, backend, n, t1 - t0, startup, failed, book.retried),
                     failed, dict(sorted(book.loads.items())))


def _check_policy(spec: str, seed: int) -> None:
    """Resolve the policy on the driver first, so a typo is one clear line, not N task errors.
    Loads only what is cheap to load (built-ins); checkpoints are checked for presence."""
    from policies.base import PolicyError
    from policies.registry import BUILTIN, BUNDLED, bundled_checkpoint, has_checkpoint

    if spec in BUILTIN:
        return
    if spec in BUNDLED:
        if not has_checkpoint(spec):
            raise UserError(f"policy {spec!r}: no bundled checkpoint at {bundled_checkpoint(spec)}")
        return
    p = Path(spec)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UserError(f"{spec}: not a checkpoint folder (no config.json inside)")
        return
    if ":" in spec:
        mod_name = spec.partition(":")[0]
        if importlib.util.find_spec(mod_name) is None:
            raise UserError(f"policy {spec!r}: no module named {mod_name!r}")
        return
    try:
        load_policy_spec(spec, seed=seed)
    except PolicyError as e:
        raise UserError(str(e)) from None


def _throughput(kind: str, results: list[dict], backend: str, workers: int, wall: float, startup: float,
                failed: int, retried: int) -> dict:
    """Rates over the task phase (workers up, policies loaded); ``wall_seconds`` includes start-up.
    Frames: steps for episodes (one frame observed per step), frames decoded for replays."""
    ok = [r for r in results if "error" not in r]
    frames = sum(int(r.get("steps" if kind == "episode" else "frames_decoded", 0) or 0) for r in ok)
    unit = "episodes" if kind == "episode" else "sessions"
    busy = max(wall - startup, 1e-9)
    return {
        "backend": backend,
        "workers": workers,
        unit: len(ok),
        "failed": failed,
        "retried": retried,
        "frames": frames,
        "wall_seconds": round(wall, 3),
        "startup_seconds": round(startup, 3),
        f"{unit}_per_s": round(len(ok) / busy, 3),
        "frames_per_s": round(frames / busy, 2),
    }


# --------------------------------------------------------------------------------------------
# What the commands call.


def replay_sessions(paths: list[str], policy_spec: str, *, tolerance_pt: float | None = None, **kw: Any) -> RunReport:
    """Replay each session (paths as :func:`agent.sessions.format.find_sessions` gives them) through the policy."""
    return run_tasks("replay", [{"session": p} for p in paths], policy_spec,
                     options={} if tolerance_pt is None else {"tolerance_pt": tolerance_pt}, **kw)


def evaluate_episodes(specs: list[dict], policy_spec: str, *, max_steps: int | None = None, **kw: Any) -> RunReport:
    """Closed-loop episodes (specs from :func:`agent.desktops.virtual.evaluate.episode_specs`) through the policy."""
    from agent.desktops.virtual.evaluate import MAX_STEPS

    return run_tasks("episode", specs, policy_spec, options={"max_steps": max_steps or MAX_STEPS}, **kw)


def deterministic_view(doc: Any) -> Any:
    """``doc`` without what the wall clock decides: the ``throughput`` key and per-episode
    :data:`TIMING_FIELDS` (and ``mean_wall_seconds`` in summaries), at any depth."""
    drop = {"throughput", "mean_wall_seconds", *TIMING_FIELDS}
    if isinstance(doc, dict):
        return {k: deterministic_view(v) for k, v in doc.items() if k not in drop}
    if isinstance(doc, list):
        return [deterministic_view(v) for v in doc]
    return doc


def add_backend_arguments(p, *, workers_default: int | None = None) -> None:
    """``--backend``, ``--address`` and (unless the command has it) ``--workers``."""
    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help="where tasks run: local process pool (default) or ray")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (e.g. auto, or HOST:6379); default: start a local Ray")
    p.add_argument("--task-timeout", type=float, default=None, metavar="SECONDS",
                   help="kill a worker whose task (an episode, a replay) runs longer; the task is retried once, "
                        "then reported as timed out")
    if not any("--workers" in a.option_strings for a in p._actions):
        p.add_argument("--workers", type=int, default=workers_default,
                       help="parallel workers (local default 1 = in this process; ray default: cluster CPUs)")
