"""Exceptions that reach the user as one line (``error: <message>``) instead of a traceback."""

import sys

from configs.errors import ConfigError


class UserError(Exception):
    """Bad input the user can fix: the message names the problem and the fix, on one line."""


#: What the command-line entry points turn into ``error: <message>`` and exit status 2 (``optimizers``'
#: MuonConfigError is a ConfigError: caught here without importing torch).
USER_ERRORS = (UserError, ConfigError)


def run_cli(run, argv, *, exit_codes: bool = False, **kwargs) -> int:
    """Call a CLI's ``run(argv, **kwargs)``; a user error becomes ``error: <message>`` on stderr and status 2.

    Every command-line entry point goes through here. ``exit_codes=True`` also returns the status of a
    ``SystemExit`` raised inside (``--help``: 0; an argparse or wrapped parser's rejection, which printed its
    own message: its code, 2 when it has none) instead of letting it end the process."""
    try:
        return run(argv, **kwargs)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        if not exit_codes:
            raise
        return exc.code if isinstance(exc.code, int) else 2
