"""Scale-out: the same tasks give the same results on the local pool and on Ray; failures of one
task (a corrupt session, a worker that dies) are retried once and reported, never fatal.

One local Ray (2 CPUs, no dashboard) is shared by the module and shut down after it.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from agent.desktops.virtual.evaluate import episode_specs
from agent.errors import UserError
from agent.scaleout.backends import (
    deterministic_view,
    evaluate_episodes,
    replay_sessions,
    run_tasks,
)
from agent.sessions.format import find_sessions
from policies.builtin import RandomPolicy

# Inherited by pool processes and by Ray's workers (started after this module is imported); made
# once, by the process that imports this module first, which removes it at exit.
if "DW_TEST_CRASH_DIR" not in os.environ:
    os.environ["DW_TEST_CRASH_DIR"] = tempfile.mkdtemp(prefix="dw-crash-")
    atexit.register(shutil.rmtree, os.environ["DW_TEST_CRASH_DIR"], True)
CRASH_ALWAYS_WIDTH = 800  # a test policy kills its worker on every screen this wide
CRASH_ONCE_WIDTH = 832  # ... and only the first time on screens this wide
CRASH_POLICY = "tests.test_scaleout:crash_policy"
TASKS = ["click-button", "enter-text", "drag-slider"]
SIZE = [(640, 480, 1.0)]


class CrashingPolicy:
    """Test-only: the random policy, but its process dies (``os._exit``) on some screen widths."""

    name = "crash-test"

    def __init__(self, seed: int = 0):
        self.inner = RandomPolicy(seed)

    def reset(self, instruction: str) -> None:
        self.inner.reset(instruction)

    def act(self, observation):
        w = observation.frame.screen.width
        if w == CRASH_ALWAYS_WIDTH:
            os._exit(3)
        if w == CRASH_ONCE_WIDTH:
            marker = Path(os.environ["DW_TEST_CRASH_DIR"]) / "crashed-once"
            if not marker.exists():
                marker.touch()
                os._exit(4)
        return self.inner.act(observation)


def crash_policy(seed: int = 0, device: str = "cpu") -> CrashingPolicy:
    return CrashingPolicy(seed)


HANG_WIDTH = 704  # a test policy never returns on screens this wide


class HangingPolicy(CrashingPolicy):
    """Test-only: the random policy, but it hangs (a stuck browser, a deadlock) on some screens."""

    def act(self, observation):
        if observation.frame.screen.width == HANG_WIDTH:
            time.sleep(3600)
        return self.inner.act(observation)


def hang_policy(seed: int = 0, device: str = "cpu") -> HangingPolicy:
    return HangingPolicy(seed)


def _clear_crash_marker() -> None:
    (Path(os.environ["DW_TEST_CRASH_DIR"]) / "crashed-once").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'digital-worker[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """Four recorded scripted sessions (two tasks, two seeds) and one corrupt one, in one folder."""
    from agent.sessions.demos import record_demo

    root = tmp_path_factory.mktemp("sessions")
    for spec in episode_specs(["click-button", "click-checkboxes"], 2, SIZE, seed=30_000):
        record_demo({**spec, "fps": 10.0}, str(root / "good"))
    bad = root / "bad" / "corrupt"
    bad.mkdir(parents=True)
    (bad / "session.json").write_text('{"schema": 1, "screen": ')  # cut mid-write
    return root


@pytest.fixture(scope="module")
def specs():
    return episode_specs(TASKS, 2, SIZE, seed=40_000)


@pytest.fixture(scope="module")
def local_eval(specs):
    return evaluate_episodes(specs, "random", max_steps=25, backend="local", workers=2)


@pytest.fixture(scope="module")
def ray_eval(specs, ray_cluster):
    return evaluate_episodes(specs, "random", max_steps=25, backend="ray", workers=2)


def test_eval_local_pool_matches_in_process_and_ray(specs, local_eval, ray_eval):
    inproc = evaluate_episodes(specs, "random", max_steps=25, backend="local", workers=1)
    ray_run = ray_eval
    ref = deterministic_view(inproc.results)
    assert [(r["task"], r["seed"]) for r in ref] == [(s["task"], s["seed"]) for s in specs]
    assert deterministic_view(local_eval.results) == ref
    assert deterministic_view(ray_run.results) == ref
    # Same JSON, byte for byte, once the wall clock is set aside.
    dump = lambda rep: json.dumps(deterministic_view({"episodes": rep.results, "throughput": rep.throughput}),  # noqa: E731
                                  sort_keys=True)
    assert dump(local_eval) == dump(ray_run) == dump(inproc)
    # The policy loaded once per worker process, not once per episode.
    for rep in (local_eval, ray_run):
        assert 1 <= len(rep.policy_loads) <= 2 and set(rep.policy_loads.values()) == {1}, rep.policy_loads
    assert ray_run.throughput["backend"] == "ray" and ray_run.throughput["workers"] == 2


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_replay_folder_with_a_corrupt_session(sessions, backend, request):
    if backend == "ray":
        request.getfixturevalue("ray_cluster")
    paths = find_sessions([sessions])
    assert len(paths) == 5 and paths == sorted(paths)
    rep = replay_sessions(paths, "scripted", backend=backend, workers=2)
    assert [r["session"] for r in rep.results] == paths
    bad = [r for r in rep.results if "error" in r]
    assert len(bad) == 1 and rep.failed == 1
    assert bad[0]["session"].endswith("corrupt") and "not valid JSON" in bad[0]["error"]
    assert bad[0]["attempts"] == 2  # retried once
    good = [r for r in rep.results if "error" not in r]
    assert all(r["agreement"] == 1.0 for r in good)
    ref = replay_sessions(paths, "scripted", backend="local", workers=1)
    assert rep.results == ref.results  # replay results carry no wall-clock fields at all


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_crashing_worker_is_retried_once_then_reported(backend, request):
    if backend == "ray":
        request.getfixturevalue("ray_cluster")
    _clear_crash_marker()
    sizes = [(640, 480, 1.0), (CRASH_ALWAYS_WIDTH, 600, 1.0), (CRASH_ONCE_WIDTH, 624, 1.0)]
    specs = episode_specs(["click-button"], 1, sizes, seed=42_000)
    rep = evaluate_episodes(specs, CRASH_POLICY, max_steps=20, backend=backend, workers=2)
    assert [(r["task"], r["size"]) for r in rep.results] == [(s["task"], s["size"]) for s in specs]
    crashed = [r for r in rep.results if "error" in r]
    assert {tuple(r["size"]) for r in crashed} == {(CRASH_ALWAYS_WIDTH, 600)}, crashed
    assert all(r["attempts"] == 2 and "worker process died" in r["error"] for r in crashed)
    # Every other episode -- including the one whose first attempt crashed -- matches a clean run.
    clean = evaluate_episodes([s for s in specs if s["size"][0] != CRASH_ALWAYS_WIDTH], "random",
                              max_steps=20, backend="local", workers=1)
    assert deterministic_view([r for r in rep.results if "error" not in r]) == deterministic_view(clean.results)
    assert rep.throughput["failed"] == 1
    # Ray charges each death to its task: 1 retry of the always-crashing episode, 1 of the once-crashing
    # one. The pool re-runs uncharged the tasks that were in flight beside a death, so it may charge fewer.
    assert rep.throughput["retried"] == 2 if backend == "ray" else 1 <= rep.throughput["retried"] <= 2


@pytest.mark.parametrize("backend,workers", [("local", 1), ("local", 2), ("ray", 2)])
def test_hung_task_times_out_and_the_rest_finish(backend, workers, request):
    if backend == "ray":
        request.getfixturevalue("ray_cluster")
    specs = episode_specs(["click-button"], 1, [(640, 480, 1.0), (HANG_WIDTH, 528, 1.0), (672, 504, 1.0)],
                          seed=43_000)
    t0 = time.perf_counter()
    rep = evaluate_episodes(specs, "tests.test_scaleout:hang_policy", max_steps=20, backend=backend,
                            workers=workers, task_timeout=2.0)
    assert time.perf_counter() - t0 < 60  # not the hour the policy would sleep
    hung = [r for r in rep.results if "error" in r]
    assert [tuple(r["size"]) for r in hung] == [(HANG_WIDTH, 528)]
    assert hung[0]["attempts"] == 2 and hung[0]["error"] == "timed out after 2 s"
    clean = evaluate_episodes([s for s in specs if s["size"][0] != HANG_WIDTH], "random", max_steps=20)
    assert deterministic_view([r for r in rep.results if "error" not in r]) == deterministic_view(clean.results)
    with pytest.raises(UserError, match="--task-timeout"):
        evaluate_episodes(specs, "random", task_timeout=0)


def test_throughput_with_one_and_two_workers(specs, local_eval, ray_eval):
    figures = {("local", 2): local_eval.throughput, ("ray", 2): ray_eval.throughput}
    for backend, workers in (("local", 1), ("ray", 1)):
        figures[(backend, workers)] = evaluate_episodes(specs, "random", max_steps=25, backend=backend,
                                                        workers=workers).throughput
    for (backend, workers), tp in figures.items():
        assert tp["backend"] == backend and tp["workers"] == workers
        assert tp["episodes"] == len(specs) and tp["failed"] == 0
        assert tp["episodes_per_s"] > 0 and tp["frames_per_s"] > 0 and tp["frames"] > 0
    print({f"{b}x{w}": (tp["episodes_per_s"], tp["frames_per_s"]) for (b, w), tp in figures.items()})


def test_dw_replay_cli_on_ray(sessions, ray_cluster, capsys):
    from agent.cli.main import main

    rc = main(["replay", str(sessions / "good"), "--backend", "ray", "--workers", "2", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert len(doc["sessions"]) == 4 and doc["throughput"]["sessions"] == 4
    assert doc["throughput"]["backend"] == "ray"
    rc = main(["replay", str(sessions), "--workers", "2", "--json"])
    out = capsys.readouterr()
    assert rc == 1 and "1 of 5 sessions failed" in out.err
    local = json.loads(out.out)
    assert local["sessions"][1:] == doc["sessions"]  # 'bad' sorts first


def test_single_corrupt_session_is_one_clear_line(sessions, capsys):
    from agent.cli.main import main

    assert main(["replay", str(sessions / "bad" / "corrupt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid JSON" in err[0] and "Traceback" not in err[0]


def test_ray_missing_is_one_clear_line(monkeypatch, specs):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UserError, match=r"pip install 'digital-worker\[ray\]'"):
        run_tasks("episode", specs, "random", backend="ray")


def test_bad_arguments_are_user_errors(tmp_path, specs):
    with pytest.raises(UserError, match="unknown backend"):
        run_tasks("episode", specs, "random", backend="spark")
    with pytest.raises(UserError, match="unknown policy"):
        run_tasks("episode", specs, "no-such-policy")
    with pytest.raises(UserError, match="no sessions found"):
        find_sessions([tmp_path])


def test_find_sessions_follows_linked_folders(tmp_path):
    """A folder of links to sessions (a dataset put together from others) is searched like a real
    one; a link back up the tree does not loop."""
    real = tmp_path / "real" / "s1"
    real.mkdir(parents=True)
    (real / "session.json").write_text("{}")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "a").symlink_to(real, target_is_directory=True)
    (linked / "loop").symlink_to(linked, target_is_directory=True)
    assert find_sessions([linked]) == [str(linked / "a")]


def test_dw_eval_cli_same_json_on_both_backends(ray_cluster, capsys):
    from agent.cli.main import main

    argv = ["eval", "--tasks", "click-button,close-dialog", "--episodes", "2", "--sizes", "640x480",
            "--policy", "random", "--max-steps", "15", "--json"]
    docs = {}
    for backend in ("local", "ray"):
        assert main([*argv, "--backend", backend, "--workers", "2"]) == 0
        docs[backend] = json.loads(capsys.readouterr().out)
    assert docs["ray"]["throughput"]["backend"] == "ray" and docs["local"]["throughput"]["workers"] == 2
    assert deterministic_view(docs["local"]) == deterministic_view(docs["ray"])
    assert docs["local"]["summary"]["episodes"] == 4
