"""The runtime: desktops, executors, the agent loop, sessions, streaming, benchmarks and the CLI.

One sub-package per concern:

* ``agent.desktops``: the Desktop protocol and every desktop, each in one place: live (with the
  executor, the only module that sends OS input, and its safety controls), virtual, MiniWoB++,
  and remote (a served desktop reached over websockets); a benchmark's evaluation lives with it.
* ``agent.loop``: the one loop (observe -> act -> apply), timed per stage, optionally recorded.
* ``agent.sessions``: the session format, recorder and reader; human and expert demos; replay.
* ``agent.stream``: one desktop served over websockets, its wire format and its pictures.
* ``agent.scaleout``: evaluation episodes and replays as tasks on a process pool or on Ray.
* ``agent.training``: sessions as training samples, and the training recipes.
* ``agent.bench``: latency benchmarks, one module per part.
* ``agent.cli``: the ``dw`` command line, one module per subcommand; nothing else imports it but
  a desktop's own ``python -m`` entry point.

``agent.errors`` and ``agent.stats`` are leaves every part may import. No module imports another
that imports it back, directly or around a cycle (``tests/test_layers.py``).
"""

import os
import sys

# torch's CPU threads (GNU OpenMP) spin for 300,000 rounds after each parallel operation before
# they sleep. A pixel policy's step reads in torch and then runs in ONNX Runtime on the same cores,
# and the spinning threads took those cores from it: about 2 ms of a 25 ms step on 2 cores
# (docs/policies.md, "Latency"). OpenMP reads this once, when torch loads, so it is set here,
# before anything imports torch (policies/__init__.py imports this package for that); a value the
# user set stays.
os.environ.setdefault("GOMP_SPINCOUNT", "30000")

# The public Python API (docs/api.md), importable from the package: ``from agent import Agent``.
# Loaded on first use (PEP 562), so ``import agent`` stays cheap and imports nothing else of ours.
_EXPORTS = {
    "Agent": "agent.loop", "RunResult": "agent.loop",
    "Desktop": "agent.desktops", "DesktopError": "agent.desktops", "ActionRefused": "agent.desktops",
    "VirtualDesktop": "agent.desktops.virtual", "task_names": "agent.desktops.virtual",
    "LiveDesktop": "agent.desktops.live", "RemoteDesktop": "agent.desktops.remote",
    "Session": "agent.sessions.format", "Event": "agent.sessions.format",
    "SessionRecorder": "agent.sessions.format", "open_session": "agent.sessions.format",
    "find_sessions": "agent.sessions.format",
    "export_sessions": "agent.sessions.export", "import_dataset": "agent.sessions.export",
    "episode_specs": "agent.desktops.virtual.evaluate", "run_episode": "agent.desktops.virtual.evaluate",
    "run_episodes": "agent.desktops.virtual.evaluate", "summarise": "agent.desktops.virtual.evaluate",
    "UserError": "agent.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agent' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


# Gymnasium: ``import agent`` registers one environment per virtual task, ``dw/<task>-v0``
# (agent/desktops/virtual/gym.py). Gymnasium 1.x no longer loads plugins from the ``gymnasium.envs``
# entry-point group (removed in 1.0), so registration happens here, without importing gymnasium
# (about 160 ms) for the programs that never use it: at once when gymnasium is already loaded, else
# by a one-shot import hook that registers when gymnasium finishes loading. The names are listed
# here, not read from the task registry (that would import the desktop); tests/test_virtual_gym.py
# checks they match ``task_names()``.
GYM_TASKS = (
    "click-button", "click-checkboxes", "enter-text", "drag-slider", "click-menu", "close-dialog",
    "double-click-icon", "select-dropdown", "select-radio", "toggle-switch", "spin-box", "fill-form", "type-field",
    "switch-tab", "pick-date", "press-button", "scroll-list", "expand-tree", "table-row", "search-pick", "context-menu",
    "drag-to-target", "replace-word", "copy-paste", "keyboard-shortcut", "confirm-dialog", "dismiss-popup",
    "raise-window", "wait-spinner", "absent-target",
)
GYM_MAX_EPISODE_STEPS = 200


def register_gym_envs() -> list[str]:
    """Register ``dw/<task>-v0`` for every virtual task with Gymnasium (idempotent); returns the ids."""
    import gymnasium

    ids = []
    for task in GYM_TASKS:
        eid = f"dw/{task}-v0"
        if eid not in gymnasium.registry:
            gymnasium.register(
                id=eid, entry_point="agent.desktops.virtual.gym:VirtualDesktopEnv", kwargs={"task": task},
                max_episode_steps=GYM_MAX_EPISODE_STEPS,
            )
        ids.append(eid)
    return ids


class _RegisterWhenGymnasiumLoads:
    """A meta-path finder that finds nothing itself: when ``gymnasium`` is first imported it lets the
    other finders find it and wraps the loader so that the ids are registered once it has loaded."""

    def find_spec(self, name, path=None, target=None):
        if name != "gymnasium":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec

        class _Loader:
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                try:
                    register_gym_envs()
                except Exception:  # registration must never break importing gymnasium
                    pass

            def __getattr__(self, attr):
                return getattr(loader, attr)

        spec.loader = _Loader()
        return spec


if "gymnasium" in sys.modules:
    register_gym_envs()
elif not any(isinstance(f, _RegisterWhenGymnasiumLoads) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenGymnasiumLoads())
