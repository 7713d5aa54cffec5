"""Exceptions that reach the user as one line (``error: <message>``) instead of a traceback."""

from configs.model_configs import ConfigError
from optimizers.errors import MuonConfigError


class UserError(Exception):
    """Bad input the user can fix: the message names the problem and the fix, on one line."""


#: What the command-line entry points turn into ``error: <message>`` and exit status 2.
USER_ERRORS = (UserError, ConfigError, MuonConfigError)
