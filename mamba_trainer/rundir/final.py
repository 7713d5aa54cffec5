"""``final/``: the model a finished run saves, written whole or not at all."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .layout import FINAL_DIR

__all__ = ["save_final"]


def save_final(trainer, tokenizer, run_dir: Path) -> Path:
    """Write ``final/`` whole or not at all: save into a temporary folder, then swap it in."""
    final = Path(run_dir) / FINAL_DIR
    tmp = Path(run_dir) / f".{FINAL_DIR}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    trainer.save_model(str(tmp))
    if trainer.args.should_save:
        tokenizer.save_pretrained(str(tmp))
        old = None
        if final.exists():
            old = final.with_name(f".{FINAL_DIR}.old{os.getpid()}")
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old)
    return final
