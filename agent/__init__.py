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
