"""Local path or Hugging Face Hub id: the one rule every flag that takes either follows.

    local_path("checkpoints/run/final", "model path '{name}' does not exist; ...")   # Path, or UserError
    local_path("openai/gsm8k", "...")                                                 # None: a Hub id

Used for datasets (``--dataset``, ``--mix_gsm8k``), models (``--model_name_or_path``) and tokenizers
(``--tokenizer``). The rule:

1. a name that exists on disk is local (an ``org/name`` folder here wins over the Hub repo of that name);
2. a name that looks like a path but does not exist is an error naming it, never a Hub lookup. It looks like a
   path when it starts with ``./``, ``../``, ``/`` or ``~`` (or is ``.`` / ``..``), holds a Windows separator,
   ends in a data-file suffix, cannot be a Hub id (a Hub id is ``name`` or ``owner/name`` of letters, digits,
   ``-``, ``_`` and ``.``), or its folder part exists here (``checkpoints/run`` with a local ``checkpoints/``);
3. anything else is a Hub id.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import UserError

__all__ = ["FILE_BUILDERS", "HUB_ID", "looks_like_path", "local_path"]

#: What a Hugging Face Hub repo id can look like: ``name`` or ``owner/name``.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
PATH_PREFIXES = ("./", "../", "/", "~")
#: Data files by suffix, and the ``datasets`` builder that reads each: a name ending in one is a file, not a Hub repo.
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def looks_like_path(name: str | Path) -> bool:
    """Whether ``name`` is meant as a local path (rule 2 above), whether or not it exists.

    >>> [looks_like_path(n) for n in ("openai/gsm8k", "gpt2", "./x", "~/data", "a/b/c", "train.jsonl")]
    [False, False, True, True, True, True]
    """
    text = str(name)
    if text in (".", "..") or text.startswith(PATH_PREFIXES) or (os.sep != "/" and os.sep in text):
        return True
    if Path(text).suffix in FILE_BUILDERS or not HUB_ID.match(text):
        return True
    parent = Path(text).expanduser().parent
    return str(parent) not in ("", ".") and parent.is_dir()


def local_path(name: str | Path, missing: str) -> Path | None:
    """The local file or folder ``name`` names, or None for a Hub id. A path that looks local but does not
    exist raises ``UserError(missing.format(name=name))``: one line naming the path and the fix."""
    text = str(name)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if looks_like_path(text):
        raise UserError(missing.format(name=text))
    return None
