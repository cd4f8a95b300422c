"""One module per ``dw`` subcommand; each defines ``register(subparsers)``.

A command's parser sets ``func`` (``args -> int`` exit code) with ``set_defaults``.
"""
