"""The ``dw`` command line. Subcommands live in ``agent.cli.commands``, one module each."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from agent.cli.util import use_help_formatter
from agent.errors import UserError


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("digital-worker")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dw", description="digital-worker: a runtime for computer-use agents")
    parser.add_argument("--shared-sessions", action="store_true",
                        help="sessions recorded by this command are readable as the umask allows (default: by "
                             "the owner only, as typed text may be a password); also $DW_SHARED_SESSIONS=1")
    parser.add_argument("--version", action="version", version=f"dw (digital-worker) {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    import agent.cli.commands as commands

    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"agent.cli.commands.{mod.name}").register(sub)
    use_help_formatter(parser)  # every --help shows the options' defaults
    return parser


def os_error_line(e: OSError) -> str:
    """An ``OSError`` as one line: the file(s) and the system's words, without a traceback."""
    what = e.strerror or str(e) or type(e).__name__
    files = [f for f in (e.filename, e.filename2) if f is not None]
    return ": ".join([*(os.fsdecode(f) if isinstance(f, str | bytes) else str(f) for f in files), what]) if files else what


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    shared_before = os.environ.get("DW_SHARED_SESSIONS")
    if args.shared_sessions:  # for this command and the worker processes it starts
        os.environ["DW_SHARED_SESSIONS"] = "1"
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"dw {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # a path the user named that is a file, unwritable, on a full disk, ...
        print(f"dw {args.command}: error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dw {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.shared_sessions:
            if shared_before is None:
                os.environ.pop("DW_SHARED_SESSIONS", None)
            else:
                os.environ["DW_SHARED_SESSIONS"] = shared_before


if __name__ == "__main__":
    sys.exit(main())
