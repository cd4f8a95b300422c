"""The runtime: desktops, executors, the agent loop, sessions, streaming, benchmarks and the CLI."""

import os

# torch's CPU threads (GNU OpenMP) spin for 300,000 rounds after each parallel operation before
# they sleep. A pixel policy's step reads in torch and then runs in ONNX Runtime on the same cores,
# and the spinning threads took those cores from it: about 2 ms of a 25 ms step on 2 cores
# (docs/policies.md, "Latency"). OpenMP reads this once, when torch loads, so it is set here,
# before anything imports torch (policies/__init__.py imports this package for that); a value the
# user set stays.
os.environ.setdefault("GOMP_SPINCOUNT", "30000")
