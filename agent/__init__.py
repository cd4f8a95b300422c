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
