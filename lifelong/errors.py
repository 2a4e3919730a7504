"""Errors that mean "the user asked for something we cannot do": the CLI prints one line, exits 2."""


class UserError(Exception):
    """A mistake in the user's config, data or command line. The message names the problem."""


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite; the task stops (the last checkpoint stays)."""
