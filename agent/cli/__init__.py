"""The ``dw`` command line: the entry point (:mod:`agent.cli.main`), one module per subcommand
(:mod:`agent.cli.commands`) and the small parsing and output helpers they share (:mod:`agent.cli.util`).

Nothing below the CLI imports it, except a desktop's own ``python -m`` entry point
(``python -m agent.desktops.miniwob``) for the size and window parsers.
"""
