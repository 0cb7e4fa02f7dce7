"""Errors the CLI turns into one line on stderr and exit code 2."""


class UsageError(Exception):
    """Bad usage or bad input: the message names the argument, key or file."""
