"""Errors a user can act on. The CLI prints these without a traceback and exits non-zero."""


class UserError(Exception):
    """A problem the user can fix (bad config, bad input file); printed without a traceback."""
