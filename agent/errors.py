"""Errors a user can cause: the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """A bad file, flag, message or environment, explained in one line."""
