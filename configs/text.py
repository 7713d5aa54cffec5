"""Error text squeezed onto one line: the one home of this helper for every layer that needs it.

It lives here, not in ``mamba_trainer``, because ``configs`` needs it and may import only ``optimizers``;
``mamba_trainer`` and the scripts import it from here. Plain Python, no imports.
"""

from __future__ import annotations

__all__ = ["first_line", "one_line"]


def _cut(text: str, limit: int | None) -> str:
    return text if limit is None or len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def _empty(x) -> str:
    return type(x).__name__ if isinstance(x, BaseException) else ""


def one_line(x, limit: int | None = None) -> str:
    """``x`` (an exception or anything else) as one line: runs of whitespace, newlines included, become one
    space; an exception with no message gives its type's name; longer than ``limit`` is cut, ending in "...".

    >>> one_line(ValueError("bad\\n   value")), one_line(KeyError()), one_line("x" * 10, limit=8)
    ('bad value', 'KeyError', 'xxxxx...')
    """
    return _cut(" ".join(str(x).split()) or _empty(x), limit)


def first_line(x, limit: int | None = None) -> str:
    """The first non-blank line of ``x``'s text (for messages whose later lines are a traceback or a dump),
    otherwise like ``one_line``.

    >>> first_line(OSError("no connection\\nretrying with ...")), first_line(OSError())
    ('no connection', 'OSError')
    """
    lines = str(x).strip().splitlines()
    return _cut(" ".join(lines[0].split()) if lines else _empty(x), limit)
