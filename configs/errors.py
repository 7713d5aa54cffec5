"""The configuration error every part of the project raises for bad input (no torch import).

``ConfigError`` is a ``ValueError`` whose message is one line (whitespace collapsed); ``optimizers.MuonConfigError``
is one, so the command-line entry points (``mamba_trainer.errors``) catch both without importing torch.
"""

from __future__ import annotations

import difflib


class ConfigError(ValueError):
    """Unknown model size / preset / key, or a bad value or presets file. The message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def unknown_name_error(kind: str, name, valid) -> ConfigError:
    """``unknown <kind> 'x' (did you mean 'y'?); valid <kind>s: a, b, c`` as a ConfigError.

    >>> str(unknown_name_error("model size", "hybrid-tin", ["hybrid-tiny", "mamba-tiny"]))
    "unknown model size 'hybrid-tin' (did you mean 'hybrid-tiny'?); valid model sizes: hybrid-tiny, mamba-tiny"
    """
    valid = sorted(valid)
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown {kind} '{name}'{hint}; valid {kind}s: {', '.join(valid)}")
