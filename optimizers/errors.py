"""The optimizer package's user-facing error."""


class MuonConfigError(ValueError):
    """Bad optimizer input (unknown backend, lr <= 0, ...). The message is one line that names the fix."""
