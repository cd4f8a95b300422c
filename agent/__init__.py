"""The runtime: desktops, executors, the agent loop, sessions, streaming, benchmarks and the CLI."""
