"""The exception types the CLI turns into one line on stderr: a user mistake (``UserError``,
exit code 2) and runs that failed as jobs of a launcher (``RunsFailed``, exit code 1)."""


class UserError(Exception):
    """A mistake in the user's input (bad path, malformed file, invalid option): not a bug."""


class RunsFailed(Exception):
    """Runs submitted by ``--launcher`` failed: the message names them and how to rerun them."""
