"""The optimizer package's user-facing error."""

from configs.errors import ConfigError


class MuonConfigError(ConfigError):
    """Bad optimizer input (unknown backend, lr <= 0, ...). The message is one line that names the fix."""
