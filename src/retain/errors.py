"""The one exception type for user mistakes: the CLI prints its message on one line, exit code 2."""


class UserError(Exception):
    """A mistake in the user's input (bad path, malformed file, invalid option): not a bug."""
